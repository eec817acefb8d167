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

The window of outcomes is per process; the state is shared through a ``BreakerStore`` that is
written only on a transition (compare-and-set on a version) and re-read at most every ``sync_s``,
so every worker of a pipeline sees a breaker another one opened. The lock is only ever held for
a few assignments, never around the call or the store. If the store cannot be reached (it raises
``TransientError``), the breaker keeps working on its own state and writes it when it can.
Each process admits its own ``half_open_probes`` while the shared state is half-open.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum, StrEnum
from types import TracebackType
from typing import Final, Literal, Protocol, TypeAlias

from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.events import BreakerChanged, emit_in_run
from mendflow.exceptions import ConfigError, DependencyDown, MendflowError, TransientError


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    """When a breaker opens and how it recovers (counts, rates in [0, 1], seconds).

    ======================  ===================================================================
    ``window``              outcomes kept: the last N calls of this process
    ``min_calls``           no opening before the window holds this many calls
    ``failure_rate``        open when failed / calls >= this
    ``slow_call_s``         a call taking longer than this is slow
    ``slow_rate``           open when slow / calls >= this (1.0: only when every call is slow)
    ``open_s``              fail fast this long, then let probes through
    ``half_open_probes``    probes admitted while half-open; all must succeed to close
    ``sync_s``              re-read the shared state at most this often
    ======================  ===================================================================
    """

    window: int = 20
    min_calls: int = 10
    failure_rate: float = 0.5
    slow_call_s: float = 10.0
    slow_rate: float = 1.0
    open_s: float = 30.0
    half_open_probes: int = 2
    sync_s: float = 1.0

    def __post_init__(self) -> None:
        checks = {
            "window": self.window >= 1,
            "min_calls": 1 <= self.min_calls <= self.window,
            "failure_rate": 0.0 < self.failure_rate <= 1.0,
            "slow_call_s": self.slow_call_s > 0.0,
            "slow_rate": 0.0 < self.slow_rate <= 1.0,
            "open_s": 0.0 <= self.open_s < float("inf"),
            "half_open_probes": self.half_open_probes >= 1,
            "sync_s": 0.0 <= self.sync_s < float("inf"),
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(
                    f"BreakerPolicy {name}={getattr(self, name)!r} is out of range; use counts "
                    f">= 1 (min_calls <= window), rates in (0, 1] and finite seconds >= 0"
                )


class BreakerState(StrEnum):
    """Where a breaker is: calls pass (closed), fail fast (open), or a few probe (half_open)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """The shared state of one dependency's breaker; ``opened_at`` is epoch seconds."""

    dependency: str
    state: BreakerState
    opened_at: float | None
    reason: str
    version: int


class BreakerStore(Protocol):
    """Where breakers share their state; ``save`` is a compare-and-set on the version.

    A store that cannot be reached raises ``TransientError``.
    """

    def load(self, dependency: str) -> BreakerRecord | None:
        """The stored record of ``dependency``, or None when it never changed state."""
        ...

    def save(self, record: BreakerRecord, *, expected_version: int) -> bool:
        """Store ``record`` as version ``expected_version + 1`` if the stored version is
        ``expected_version`` (0: no record); False when another writer got there first."""
        ...


class MemoryBreakerStore:
    """A ``BreakerStore`` in a dict, shared by the breakers of one process."""

    def __init__(self) -> None:
        self._records: dict[str, BreakerRecord] = {}
        self._lock = threading.Lock()

    def load(self, dependency: str) -> BreakerRecord | None:
        with self._lock:
            return self._records.get(dependency)

    def save(self, record: BreakerRecord, *, expected_version: int) -> bool:
        with self._lock:
            current = self._records.get(record.dependency)
            if (0 if current is None else current.version) != expected_version:
                return False
            self._records[record.dependency] = replace(record, version=expected_version + 1)
            return True


class _Outcome(Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class _Move:
    """A transition decided under the lock, to be written to the store outside it."""

    epoch: int
    target: BreakerState
    reason: str


_SYNC: Final = "sync"
_Step: TypeAlias = int | _Move | Literal["sync"]
_MAX_STEPS = 4


class _Window:
    """The last N outcomes as (failed, slow), with running counts."""

    __slots__ = ("_outcomes", "failures", "slow")

    def __init__(self, size: int) -> None:
        self._outcomes: deque[tuple[bool, bool]] = deque(maxlen=size)
        self.failures = 0
        self.slow = 0

    @property
    def calls(self) -> int:
        return len(self._outcomes)

    def add(self, failed: bool, slow: bool) -> None:
        if len(self._outcomes) == self._outcomes.maxlen:
            old_failed, old_slow = self._outcomes[0]
            self.failures -= old_failed
            self.slow -= old_slow
        self._outcomes.append((failed, slow))
        self.failures += failed
        self.slow += slow

    def clear(self) -> None:
        self._outcomes.clear()
        self.failures = self.slow = 0


class CircuitBreaker:
    """Guards calls to one dependency; see the module docstring for the state machine."""

    def __init__(
        self,
        dependency: str,
        *,
        policy: BreakerPolicy = BreakerPolicy(),
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
        self.dependency = dependency
        self.policy = policy
        self._store: BreakerStore = MemoryBreakerStore() if store is None else store
        self._clock = clock
        self._failure_types = tuple(failure_types)
        self._lock = threading.Lock()  # guards the fields below; never held around I/O
        self._io_lock = threading.Lock()  # serializes store reads/writes of this breaker
        self._record = BreakerRecord(dependency, BreakerState.CLOSED, None, "", 0)
        self._stored_version = 0  # the version the store is known to hold
        self._dirty = False  # the local record could not be written yet
        self._epoch = 0  # bumped on every state change; outcomes of older calls are dropped
        self._window = _Window(policy.window)
        self._probes = 0
        self._successes = 0
        self._probe_failed = False
        self._synced_at = float("-inf")

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
        self._enter()

    def record(self, success: bool, duration_s: float) -> None:
        """Record the outcome of a call admitted by ``allow()``."""
        outcome = _Outcome.SUCCESS if success else _Outcome.FAILURE
        self._settle(self._complete(None, outcome, duration_s, ""))

    def release(self) -> None:
        """Give back a call admitted by ``allow()`` that says nothing about the dependency."""
        self._complete(None, _Outcome.IGNORED, 0.0, "")

    # -- admission -----------------------------------------------------------------------------

    def _enter(self) -> int:
        may_sync = True
        for _ in range(_MAX_STEPS):
            step = self._step(may_sync)
            if isinstance(step, int):
                return step
            may_sync = may_sync and isinstance(step, _Move)  # one read per admission at most
            self._run(step)
        raise self._unsettled()

    async def _enter_async(self) -> int:
        may_sync = True
        for _ in range(_MAX_STEPS):
            step = self._step(may_sync)
            if isinstance(step, int):
                return step
            may_sync = may_sync and isinstance(step, _Move)  # one read per admission at most
            await asyncio.to_thread(self._run, step)
        raise self._unsettled()

    def _step(self, may_sync: bool) -> _Step:
        """Admit (the epoch of the call), or name the store I/O needed first, or raise."""
        now = self._clock.monotonic()
        with self._lock:
            if may_sync and now - self._synced_at >= self.policy.sync_s:
                self._synced_at = now
                return _SYNC
            record = self._record
            if record.state is BreakerState.CLOSED:
                return self._epoch
            if record.state is BreakerState.OPEN:
                wait = self._open_remaining(record)
                if wait > 0:
                    raise self._down(record, wait)
                reason = f"open for {self.policy.open_s:g} s; letting probe calls through"
                return _Move(self._epoch, BreakerState.HALF_OPEN, reason)
            if self._probes < self.policy.half_open_probes and not self._probe_failed:
                self._probes += 1
                return self._epoch
            raise self._down(record, None)

    def _claim_sync(self) -> bool:
        now = self._clock.monotonic()
        with self._lock:
            if now - self._synced_at < self.policy.sync_s:
                return False
            self._synced_at = now
            return True

    def _open_remaining(self, record: BreakerRecord) -> float:
        if record.opened_at is None:
            return 0.0
        return record.opened_at + self.policy.open_s - self._clock.now()

    def _down(self, record: BreakerRecord, wait: float | None) -> DependencyDown:
        name = self.dependency
        if wait is None:
            message = (
                f"{name} is being probed: its circuit breaker is half-open and lets only "
                f"{self.policy.half_open_probes} probe calls through; retry shortly"
            )
        else:
            message = (
                f"{name} is failing fast: its circuit breaker opened because {record.reason}; "
                f"it lets a probe call through in {wait:.1f} s; retry then, or check {name}"
            )
        return DependencyDown(message, dependency=name, retry_after_s=wait)

    def _unsettled(self) -> DependencyDown:
        message = (
            f"the circuit breaker of {self.dependency} kept changing state while admitting "
            "a call; retry shortly"
        )
        return DependencyDown(message, dependency=self.dependency)

    # -- outcomes ------------------------------------------------------------------------------

    def _classify(self, exc: BaseException | None) -> _Outcome:
        if exc is None:
            return _Outcome.SUCCESS
        if isinstance(exc, self._failure_types):
            return _Outcome.FAILURE
        if isinstance(exc, MendflowError) and exc.retryable:
            return _Outcome.FAILURE
        return _Outcome.IGNORED

    def _finish(self, epoch: int, started: float, exc: BaseException | None) -> _Move | None:
        duration = self._clock.monotonic() - started
        error = "" if exc is None else type(exc).__name__
        return self._complete(epoch, self._classify(exc), duration, error)

    def _complete(
        self, epoch: int | None, outcome: _Outcome, duration: float, error: str
    ) -> _Move | None:
        """Fold one outcome into the window or the probes; the transition it causes, if any."""
        with self._lock:
            if epoch is not None and epoch != self._epoch:
                return None  # the call started before the last state change
            state = self._record.state
            if state is BreakerState.HALF_OPEN:
                return self._probed(outcome, duration, error)
            if state is BreakerState.OPEN or outcome is _Outcome.IGNORED:
                return None
            slow = duration > self.policy.slow_call_s
            self._window.add(outcome is _Outcome.FAILURE, slow)
            reason = self._trip_reason()
            return None if reason is None else _Move(self._epoch, BreakerState.OPEN, reason)

    def _probed(self, outcome: _Outcome, duration: float, error: str) -> _Move | None:
        policy = self.policy
        if outcome is _Outcome.IGNORED:
            self._probes = max(0, self._probes - 1)  # free the slot for another probe
            return None
        if outcome is _Outcome.FAILURE or duration > policy.slow_call_s:
            self._probe_failed = True  # no more probes, and no closing, in this episode
            reason = f"a probe call failed ({error or 'error'})"
            if outcome is _Outcome.SUCCESS:
                reason = f"a probe call took {duration:.1f} s (> {policy.slow_call_s:g} s)"
            return _Move(self._epoch, BreakerState.OPEN, reason)
        self._successes += 1
        if self._probe_failed or self._successes < policy.half_open_probes:
            return None
        reason = f"{self._successes} probe calls succeeded"
        return _Move(self._epoch, BreakerState.CLOSED, reason)

    def _trip_reason(self) -> str | None:
        window, policy = self._window, self.policy
        calls = window.calls
        if calls < policy.min_calls:
            return None
        rate = window.failures / calls
        if rate >= policy.failure_rate:
            return (
                f"{window.failures} of {calls} calls failed "
                f"(rate {rate:.2f} >= {policy.failure_rate:.2f})"
            )
        slow = window.slow / calls
        if slow >= policy.slow_rate:
            return (
                f"{window.slow} of {calls} calls took over {policy.slow_call_s:g} s "
                f"(rate {slow:.2f} >= {policy.slow_rate:.2f})"
            )
        return None

    # -- the shared state (store I/O; never under self._lock) ----------------------------------

    def _run(self, step: _Move | Literal["sync"]) -> None:
        if isinstance(step, _Move):
            self._commit(step)
        else:
            self._sync()

    def _settle(self, move: _Move | None) -> None:
        if move is not None:
            self._commit(move)

    def _sync(self) -> None:
        """Adopt the stored state if another process changed it; write ours if it is pending."""
        if not self._io_lock.acquire(blocking=False):
            return  # a transition of this breaker is being written; its result will do
        try:
            if not (self._dirty and self._save(self._record, self._stored_version)):
                self._adopt(self._store.load(self.dependency))
        except TransientError:
            pass  # the store is unreachable: keep the local state, read again after sync_s
        finally:
            self._io_lock.release()

    def _commit(self, move: _Move) -> None:
        """Apply ``move`` here at once, then compare-and-set it into the store."""
        with self._io_lock:
            begun = self._begin(move)
            if begun is None:
                return  # another thread moved the breaker first
            previous, new = begun
            lost = False
            try:
                lost = not self._save(new, new.version - 1)
                if lost:
                    self._adopt(self._store.load(self.dependency))
            except TransientError:
                pass  # the store is unreachable: the change holds here, written on a later sync
            if not lost:
                emit_in_run(
                    BreakerChanged,
                    dependency=self.dependency,
                    previous=previous.value,
                    state=new.state.value,
                    reason=new.reason,
                )

    def _begin(self, move: _Move) -> tuple[BreakerState, BreakerRecord] | None:
        """Enter the state of ``move`` unless it is stale; the previous state and the new record."""
        with self._lock:
            if move.epoch != self._epoch:
                return None
            current = self._record
            opened_at = {
                BreakerState.OPEN: self._clock.now(),
                BreakerState.HALF_OPEN: current.opened_at,
                BreakerState.CLOSED: None,
            }[move.target]
            version = self._stored_version + 1
            new = BreakerRecord(self.dependency, move.target, opened_at, move.reason, version)
            self._apply(new)
            self._dirty = True
            return current.state, new

    def _save(self, record: BreakerRecord, expected: int) -> bool:
        if not self._store.save(record, expected_version=expected):
            return False
        with self._lock:
            self._stored_version = record.version
            self._dirty = False
        return True

    def _adopt(self, stored: BreakerRecord | None) -> None:
        """Take the store's record as the truth (None: nobody ever opened this breaker)."""
        if stored is None:
            stored = BreakerRecord(self.dependency, BreakerState.CLOSED, None, "", 0)
        with self._lock:
            self._stored_version = stored.version
            self._dirty = False
            if stored != self._record:
                self._apply(stored)

    def _apply(self, record: BreakerRecord) -> None:
        """Enter ``record``'s state with a fresh window and fresh probes (under self._lock)."""
        self._record = record
        self._epoch += 1
        self._window.clear()
        self._probes = self._successes = 0
        self._probe_failed = False


class _Guard:
    """``with breaker.guard():`` — admits the call, then records how it went."""

    __slots__ = ("_breaker", "_epoch", "_started")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._epoch = 0
        self._started = 0.0

    def __enter__(self) -> None:
        self._epoch = self._breaker._enter()
        self._started = self._breaker._clock.monotonic()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        breaker = self._breaker
        breaker._settle(breaker._finish(self._epoch, self._started, exc))


class _AsyncGuard:
    """``async with breaker.guard_async():`` — the same, without blocking the event loop."""

    __slots__ = ("_breaker", "_epoch", "_started")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._epoch = 0
        self._started = 0.0

    async def __aenter__(self) -> None:
        self._epoch = await self._breaker._enter_async()
        self._started = self._breaker._clock.monotonic()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        breaker = self._breaker
        move = breaker._finish(self._epoch, self._started, exc)
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
