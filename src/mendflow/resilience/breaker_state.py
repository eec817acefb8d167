"""A circuit breaker's shared state: where it is, the record a store keeps, and how it is synced.

The window of outcomes is per process; the state is shared through a ``BreakerStore`` that is
written only on a transition (compare-and-set on a version) and re-read at most every ``sync_s``,
so every worker of a pipeline sees a breaker another one opened. If the store cannot be reached
(it raises ``TransientError``), the breaker keeps working on its own state and writes it when it
can. ``SharedState`` is that replica of the record; ``CircuitBreaker`` builds on it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final, Literal, Protocol

from mendflow.clock import Clock, SystemClock
from mendflow.events import BreakerChanged, emit_in_run
from mendflow.exceptions import DependencyDown, TransientError


class BreakerState(StrEnum):
    """Where a breaker is: calls pass (closed), fail fast (open), or a few probe (half_open)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


CLOSED = BreakerState.CLOSED
OPEN = BreakerState.OPEN
HALF_OPEN = BreakerState.HALF_OPEN


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


@dataclass(frozen=True, slots=True)
class Move:
    """A transition decided under the lock, to be written to the store outside it."""

    epoch: int
    target: BreakerState
    reason: str


SYNC: Final = "sync"
"""The store I/O of re-reading the shared state, as opposed to writing a ``Move``."""


class SharedState:
    """This process's replica of one breaker's record, kept in step with the store.

    ``_lock`` guards the record, the epoch and whatever a subclass resets in ``_entered``; it is
    never held around store I/O. ``_io_lock`` serializes this breaker's reads and writes. Every
    state change bumps the epoch, so outcomes of calls admitted before it can be dropped. The
    store is re-read at most every ``sync_s`` seconds.
    """

    def __init__(
        self, dependency: str, store: BreakerStore | None, clock: Clock, sync_s: float
    ) -> None:
        self.dependency = dependency
        self._store: BreakerStore = MemoryBreakerStore() if store is None else store
        self._clock = clock
        # SystemClock.monotonic is time.monotonic: call that directly, one Python frame less.
        self._monotonic: Callable[[], float] = (
            time.monotonic if type(clock) is SystemClock else clock.monotonic
        )
        self._sync_s = sync_s
        self._synced_at = float("-inf")
        self._lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._record = BreakerRecord(dependency, CLOSED, None, "", 0)
        self._closed = True  # self._record.state is CLOSED, read on every call
        self._stored_version = 0  # the version the store is known to hold
        self._dirty = False  # the local record could not be written yet
        self._epoch = 0

    def _entered(self) -> None:
        """Forget the outcomes of the previous state (under ``_lock``); for subclasses."""

    def _claim_sync(self) -> bool:
        """Whether this thread is to re-read the store now; at most one per ``sync_s``."""
        now = self._monotonic()
        with self._lock:
            if now - self._synced_at < self._sync_s:
                return False
            self._synced_at = now
            return True

    def _run(self, step: Move | Literal["sync"]) -> None:
        if isinstance(step, Move):
            self._commit(step)
        else:
            self._sync()

    def _unsettled(self) -> DependencyDown:
        message = (
            f"the circuit breaker of {self.dependency} kept changing state while admitting "
            "a call; retry shortly"
        )
        return DependencyDown(message, dependency=self.dependency)

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

    def _commit(self, move: Move) -> None:
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

    def _begin(self, move: Move) -> tuple[BreakerState, BreakerRecord] | None:
        """Enter the state of ``move`` unless it is stale; the previous state and the new record."""
        with self._lock:
            if move.epoch != self._epoch:
                return None
            current = self._record
            opened_at = {
                OPEN: self._clock.now(),
                HALF_OPEN: current.opened_at,
                CLOSED: None,
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
            stored = BreakerRecord(self.dependency, CLOSED, None, "", 0)
        with self._lock:
            self._stored_version = stored.version
            self._dirty = False
            if stored != self._record:
                self._apply(stored)

    def _apply(self, record: BreakerRecord) -> None:
        """Enter ``record``'s state in a new epoch, with fresh outcomes (under ``_lock``)."""
        self._record = record
        self._closed = record.state is CLOSED
        self._epoch += 1
        self._entered()


__all__: Sequence[str] = (
    "SYNC",
    "BreakerRecord",
    "BreakerState",
    "BreakerStore",
    "MemoryBreakerStore",
    "Move",
    "SharedState",
)
