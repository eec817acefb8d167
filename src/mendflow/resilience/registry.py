"""One circuit breaker per dependency, shared by everything a run calls.

    registry = BreakerRegistry(store=SqlBreakerStore(state.engine), clock=clock)
    with use_breakers(registry):
        pipeline.run(...)                  # sources and the runner call breaker_for(name)

The runner binds the registry of its state store for the run (and for the thread that reads
ahead), so an HTTP source and the destination find their breaker by their own name without being
handed one, every run of a process reuses the same breakers, and every process that uses the
same state store shares their state. Outside any binding, ``breaker_for`` uses a registry of this
process kept in memory.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.resilience.breaker import BreakerPolicy, BreakerStore, CircuitBreaker


class BreakerRegistry:
    """The breakers of a store, by dependency; the first policy asked for a dependency wins."""

    def __init__(self, store: BreakerStore | None = None, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = store
        self.clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, dependency: str, policy: BreakerPolicy | None = None) -> CircuitBreaker:
        """The breaker of ``dependency``, made with ``policy`` (or the default) on first use."""
        breaker = self._breakers.get(dependency)
        if breaker is not None:
            return breaker
        with self._lock:
            breaker = self._breakers.get(dependency)
            if breaker is None:
                breaker = CircuitBreaker(
                    dependency, policy=policy or BreakerPolicy(), store=self.store,
                    clock=self.clock,
                )
                self._breakers[dependency] = breaker
            return breaker


_PROCESS = BreakerRegistry()
_current: ContextVar[BreakerRegistry | None] = ContextVar("mendflow_breakers", default=None)


def breaker_for(dependency: str, policy: BreakerPolicy | None = None) -> CircuitBreaker:
    """The breaker of ``dependency`` in the bound registry (or this process's)."""
    return (_current.get() or _PROCESS).get(dependency, policy)


@contextmanager
def use_breakers(registry: BreakerRegistry) -> Iterator[BreakerRegistry]:
    """Make ``registry`` the one ``breaker_for`` uses in this context."""
    token = _current.set(registry)
    try:
        yield registry
    finally:
        _current.reset(token)


__all__ = ["BreakerRegistry", "breaker_for", "use_breakers"]
