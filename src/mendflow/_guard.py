"""The runner's calls to the destination, behind its circuit breaker and retried."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from mendflow.clock import Clock
from mendflow.pipeline import Pipeline
from mendflow.resilience.registry import breaker_for
from mendflow.resilience.retry import retrying

__all__ = ["Guarded"]

_T = TypeVar("_T")


class Guarded:
    """Calls to the destination, behind its circuit breaker and retried: while the destination
    is down the run holds its batch (in memory, uncommitted) and probes it again, up to the
    pipeline's ``destination_retry`` deadline; then the last error is raised."""

    def __init__(self, pipeline: Pipeline, clock: Clock) -> None:
        sink = pipeline.destination
        self.name: str = getattr(sink, "name", "") or type(sink).__name__
        self.policy = pipeline.destination_retry
        self.clock = clock
        policy = pipeline.destination_breaker
        self.breaker = None if policy is None else breaker_for(self.name, policy)

    def __call__(self, call: Callable[[], _T]) -> _T:
        result: _T | None = None
        for attempt in retrying(self.policy, dependency=self.name, clock=self.clock):
            with attempt:
                if self.breaker is None:
                    result = call()
                else:
                    with self.breaker.guard():
                        result = call()
        return result  # type: ignore[return-value]  # set by the attempt that succeeded
