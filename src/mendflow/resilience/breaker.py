"""A circuit breaker per dependency: fail fast while it is down, probe, close when it is back.

    breaker = CircuitBreaker("orders-api", store=SqlBreakerStore.from_url(url))
    with breaker.guard():
        response = client.get(url)

::

    closed ──(≥ min_calls in the window and failure or slow rate ≥ threshold)──> open
    open ──(open_s passed, checked on the next call)──> half_open
    half_open ──(half_open_probes successes)──> closed
    half_open ──(a probe fails or is slow)──> open

While open, ``guard()`` raises ``DependencyDown`` before the call, with ``retry_after_s`` set to
when it will probe, so ``retrying`` waits exactly that long. Only retryable ``MendflowError``s
(and ``failure_types``) count as failures; a 4xx-like ``PermanentError`` or a cancellation says
nothing about the dependency's health: it is not counted, and every exception leaves unchanged.

The state is shared between processes (see ``breaker_state``); the lock is only ever held for a
few assignments, never around the call or the store. A successful call in the closed state takes
the lock once on entering and once on leaving, and reads the clock once each time. Each process
admits its own ``half_open_probes`` while the shared state is half-open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from enum import Enum
from types import TracebackType
from typing import Final, Literal, TypeAlias

from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.exceptions import ConfigError, MendflowError
from mendflow.resilience.breaker_policy import OK, BreakerPolicy, OutcomeWindow, Probes, refusal
from mendflow.resilience.breaker_state import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    SYNC,
    BreakerRecord,
    BreakerState,
    BreakerStore,
    MemoryBreakerStore,
    Move,
    SharedState,
)


class _Outcome(Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"


_SUCCESS: Final = _Outcome.SUCCESS
_FAILURE: Final = _Outcome.FAILURE
_IGNORED: Final = _Outcome.IGNORED
_DEFAULT_POLICY: Final = BreakerPolicy()
_Step: TypeAlias = int | Move | Literal["sync"]
_MAX_STEPS = 4


class CircuitBreaker(SharedState):
    """Guards calls to one dependency; see the module docstring for the state machine.

    The policy is fixed at construction: the window is sized, and its limits read, from it.
    """

    def __init__(
        self,
        dependency: str,
        *,
        policy: BreakerPolicy = _DEFAULT_POLICY,
        store: BreakerStore | None = None,
        clock: Clock = SYSTEM_CLOCK,
        failure_types: Sequence[type[BaseException]] = (),
    ) -> None:
        for kind in failure_types:
            if not (isinstance(kind, type) and issubclass(kind, Exception)):
                raise ConfigError(
                    f"failure_types must be Exception classes, not {kind!r}: a cancellation or "
                    "an interrupt is never the dependency's failure"
                )
        super().__init__(dependency, store, clock, policy.sync_s)
        self.policy = policy
        self._failure_types = tuple(failure_types)
        self._slow_call_s = policy.slow_call_s
        self._window = OutcomeWindow(policy.window)
        self._probes = Probes()

    # -- public API ----------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state, re-read from the store if the last read is older than sync_s."""
        if self._claim_sync():
            self._sync()
        return self._record.state

    def guard(self) -> _Guard:
        """A context manager around one call: fails fast when open, records the outcome."""
        return _Guard(self)

    def guard_async(self) -> _AsyncGuard:
        """``guard()`` for ``async with``; store I/O runs in a worker thread."""
        return _AsyncGuard(self)

    def allow(self) -> None:
        """Admit one call or raise ``DependencyDown``; follow with ``record()`` or ``release()``."""
        self._enter(self._monotonic())

    def record(self, success: bool, duration_s: float) -> None:
        """Record the outcome of a call admitted by ``allow()``."""
        move = self._complete(None, _SUCCESS if success else _FAILURE, duration_s, "")
        if move is not None:
            self._commit(move)

    def release(self) -> None:
        """Give back a call admitted by ``allow()`` that says nothing about the dependency."""
        self._complete(None, _IGNORED, 0.0, "")

    # -- admission -----------------------------------------------------------------------------

    def _enter(self, now: float) -> int:
        """The epoch of an admitted call, after any store I/O; ``now`` is the clock read first."""
        may_sync = True
        for _ in range(_MAX_STEPS):
            step = self._step(may_sync, now)
            if isinstance(step, int):
                return step
            may_sync = may_sync and isinstance(step, Move)  # one read per admission at most
            self._run(step)
            now = self._monotonic()
        raise self._unsettled()

    async def _enter_async(self) -> int:
        may_sync = True
        for _ in range(_MAX_STEPS):
            step = self._step(may_sync, self._monotonic())
            if isinstance(step, int):
                return step
            may_sync = may_sync and isinstance(step, Move)  # one read per admission at most
            await asyncio.to_thread(self._run, step)
        raise self._unsettled()

    def _step(self, may_sync: bool, now: float) -> _Step:
        """Admit (the epoch of the call), or name the store I/O needed first, or raise."""
        with self._lock:
            if may_sync and now - self._synced_at >= self._sync_s:
                self._synced_at = now
                return SYNC
            record = self._record
            if record.state is CLOSED:
                return self._epoch
            if record.state is OPEN:
                wait = self._open_remaining(record)
                if wait > 0:
                    raise refusal(self.dependency, self.policy, record.reason, wait)
                reason = f"open for {self.policy.open_s:g} s; letting probe calls through"
                return Move(self._epoch, HALF_OPEN, reason)
            if self._probes.admit(self.policy):
                return self._epoch
            raise refusal(self.dependency, self.policy, record.reason, None)

    def _open_remaining(self, record: BreakerRecord) -> float:
        if record.opened_at is None:
            return 0.0
        return record.opened_at + self.policy.open_s - self._clock.now()

    # -- outcomes ------------------------------------------------------------------------------

    def _classify(self, exc: BaseException | None) -> _Outcome:
        if exc is None:
            return _SUCCESS
        if isinstance(exc, self._failure_types):
            return _FAILURE
        if isinstance(exc, MendflowError) and exc.retryable:
            return _FAILURE
        return _IGNORED

    def _complete(
        self, epoch: int | None, outcome: _Outcome, duration: float, error: str
    ) -> Move | None:
        """Fold one outcome in; the transition it causes, if any. ``epoch`` None: no check."""
        with self._lock:
            if epoch is not None and epoch != self._epoch:
                return None  # the call started before the last state change
            return self._judge(outcome, duration, error)

    def _judge(self, outcome: _Outcome, duration: float, error: str) -> Move | None:
        """Fold one outcome into the window or the probes (under ``_lock``)."""
        state = self._record.state
        if state is HALF_OPEN:
            if outcome is _IGNORED:
                self._probes.free()
                return None
            verdict = self._probes.verdict(self.policy, outcome is _FAILURE, duration, error)
            return None if verdict is None else Move(self._epoch, *verdict)
        if state is OPEN or outcome is _IGNORED:
            return None
        self._window.add(outcome is _FAILURE, duration > self._slow_call_s)
        reason = self._window.trip_reason(self.policy)
        return None if reason is None else Move(self._epoch, OPEN, reason)

    def _entered(self) -> None:
        self._window.clear()
        self._probes = Probes()


class _Guard:
    """``with breaker.guard():`` — admits the call, then records how it went.

    The closed state's success path is inlined: one lock and one clock read on each side.
    """

    __slots__ = ("_breaker", "_epoch", "_started")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker

    def __enter__(self) -> None:
        breaker = self._breaker
        now = breaker._monotonic()
        lock = breaker._lock
        lock.acquire()  # not ``with``: acquire and release cost half as much
        try:
            if breaker._closed and now - breaker._synced_at < breaker._sync_s:
                self._epoch = breaker._epoch
                self._started = now
                return
        finally:
            lock.release()
        self._epoch = breaker._enter(now)
        self._started = breaker._monotonic()  # after the store I/O of the admission

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        breaker = self._breaker
        duration = breaker._monotonic() - self._started
        outcome = _SUCCESS if exc is None else breaker._classify(exc)
        lock = breaker._lock
        lock.acquire()
        try:
            if self._epoch != breaker._epoch:
                return  # the call started before the last state change
            window = breaker._window
            if (
                outcome is _SUCCESS
                and breaker._closed
                and duration <= breaker._slow_call_s
                and not (window.failures or window.slow)
            ):
                window.outcomes.append(OK)  # an all-OK window stays all OK: it cannot trip
                return
            move = breaker._judge(outcome, duration, "" if exc is None else type(exc).__name__)
        finally:
            lock.release()
        if move is not None:
            breaker._commit(move)


class _AsyncGuard:
    """``async with breaker.guard_async():`` — the same, without blocking the event loop."""

    __slots__ = ("_breaker", "_epoch", "_started")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker

    async def __aenter__(self) -> None:
        self._epoch = await self._breaker._enter_async()
        self._started = self._breaker._monotonic()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        breaker = self._breaker
        duration = breaker._monotonic() - self._started
        error = "" if exc is None else type(exc).__name__
        move = breaker._complete(self._epoch, breaker._classify(exc), duration, error)
        if move is not None:
            await asyncio.to_thread(breaker._commit, move)


__all__: Sequence[str] = (
    "BreakerPolicy",
    "BreakerRecord",
    "BreakerState",
    "BreakerStore",
    "CircuitBreaker",
    "MemoryBreakerStore",
)
