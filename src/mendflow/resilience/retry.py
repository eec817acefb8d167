"""Retrying a block with exponential backoff and full jitter.

    for attempt in retrying(Retry(attempts=5), dependency="orders-api"):
        with attempt:
            response = client.get(url)

Only errors marked retryable (``TransientError`` and its subclasses) are retried; anything else,
and ``BaseException`` such as cancellation, leaves at once. When the attempts or the deadline run
out, the last real error is raised as it was, not wrapped. An error may carry ``retry_after_s``
(from an HTTP Retry-After header); that wait replaces the backoff.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.events import Recovered, RetryScheduled, emit_in_run
from mendflow.exceptions import MendflowError


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """How to retry: attempts in all, backoff base and cap, and a total deadline (seconds)."""

    attempts: int = 5
    base_s: float = 0.2
    cap_s: float = 10.0
    deadline_s: float = 120.0

    def backoff_s(self, failures: int, draw: Callable[[], float] = random.random) -> float:
        """Full-jitter delay after failure number ``failures``: uniform in
        [0, min(cap, base * 2 ** (failures - 1)))."""
        return draw() * min(self.cap_s, self.base_s * 2.0 ** (failures - 1))


NO_RETRY = Retry(attempts=1)


class Attempt:
    """One try; a context manager that keeps a retryable error for the loop to judge."""

    __slots__ = ("error", "number")

    def __init__(self, number: int) -> None:
        self.number = number
        self.error: MendflowError | None = None

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if isinstance(exc, MendflowError) and exc.retryable:
            self.error = exc
            return True
        return False


def retrying(
    policy: Retry,
    *,
    dependency: str,
    clock: Clock = SYSTEM_CLOCK,
    draw: Callable[[], float] = random.random,
) -> Iterator[Attempt]:
    """Yield attempts until one succeeds; raise the last error when retrying must stop."""
    started = clock.monotonic()
    number = 0
    while True:
        number += 1
        attempt = Attempt(number)
        yield attempt
        error = attempt.error
        if error is None:
            if number > 1:
                emit_in_run(Recovered, dependency=dependency, attempts=number)
            return
        delay = getattr(error, "retry_after_s", None)
        if delay is None:
            delay = policy.backoff_s(number, draw)
        spent = clock.monotonic() - started
        if number >= policy.attempts or spent + delay > policy.deadline_s:
            raise error
        emit_in_run(
            RetryScheduled,
            dependency=dependency,
            attempt=number,
            delay_s=round(delay, 6),
            error=str(error),
            error_type=type(error).__name__,
        )
        if delay > 0:
            clock.sleep(delay)
