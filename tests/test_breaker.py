"""The circuit breaker: when it opens, how it probes and closes, what it shares and never writes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mendflow.events import BreakerChanged, Hooks, RunContext, bind_run, unbind_run
from mendflow.exceptions import (
    ConfigError,
    DependencyDown,
    SourceRejected,
    SourceUnavailable,
    TransientError,
)
from mendflow.resilience.breaker import (
    BreakerPolicy,
    BreakerRecord,
    BreakerState,
    BreakerStore,
    CircuitBreaker,
    MemoryBreakerStore,
)
from mendflow.state.breakers import SqlBreakerStore
from mendflow.testing import EventLog, FakeClock
from tests.breaker_child import DEPENDENCY, POLICY

CHILD = Path(__file__).with_name("breaker_child.py")
OPEN, HALF_OPEN, CLOSED = BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED


class CountingStore:
    """A memory store that counts loads and saves, and can be switched off."""

    def __init__(self) -> None:
        self.inner = MemoryBreakerStore()
        self.loads = 0
        self.saves = 0
        self.down = False

    def load(self, dependency: str) -> BreakerRecord | None:
        self.loads += 1
        self._check()
        return self.inner.load(dependency)

    def save(self, record: BreakerRecord, *, expected_version: int) -> bool:
        self.saves += 1
        self._check()
        return self.inner.save(record, expected_version=expected_version)

    def _check(self) -> None:
        if self.down:
            raise TransientError("state store down")



@pytest.fixture
def changes(clock: FakeClock) -> Iterator[EventLog]:
    """The events emitted while a run is bound."""
    log = EventLog()
    token = bind_run(RunContext("r1", "orders", Hooks([log]), clock.now))
    yield log
    unbind_run(token)


def _breaker(
    clock: FakeClock, store: BreakerStore | None = None, **policy: Any
) -> CircuitBreaker:
    settings = {"window": 10, "min_calls": 10, "open_s": 30.0, "sync_s": 1.0} | policy
    return CircuitBreaker("api", policy=BreakerPolicy(**settings), store=store, clock=clock)


def _call(
    breaker: CircuitBreaker, error: BaseException | None = None, *, took: float = 0.0
) -> None:
    with breaker.guard():
        if took:
            breaker._clock.sleep(took)  # a FakeClock: time passes inside the call
        if error is not None:
            raise error


def _fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(SourceUnavailable):
            _call(breaker, SourceUnavailable("connection refused"))


def _refused(breaker: CircuitBreaker) -> DependencyDown:
    calls: list[int] = []
    with pytest.raises(DependencyDown) as down, breaker.guard():
        calls.append(1)
    assert calls == []
    return down.value


def _tripped(clock: FakeClock, store: BreakerStore | None = None, **policy: Any) -> CircuitBreaker:
    breaker = _breaker(clock, store, **policy)
    _fail(breaker, 10)
    assert breaker.state is OPEN
    return breaker


def _changes(log: EventLog) -> list[BreakerChanged]:
    return [event for event in log if isinstance(event, BreakerChanged)]


def _reasons(log: EventLog) -> list[str]:
    return [event.reason for event in _changes(log)]


@pytest.mark.parametrize(
    "bad",
    [
        {"window": 0},
        {"min_calls": 21},
        {"failure_rate": 0.0},
        {"failure_rate": 1.5},
        {"slow_rate": 1.01},
        {"slow_rate": float("nan")},
        {"slow_call_s": 0.0},
        {"open_s": -1.0},
        {"half_open_probes": 0},
        {"sync_s": float("inf")},
    ],
)
def test_the_policy_rejects_values_out_of_range(bad: dict[str, Any]) -> None:
    """Every field is validated, and a slow rate above 1 is impossible."""
    with pytest.raises(ConfigError, match=next(iter(bad))):
        BreakerPolicy(**bad)


def test_failure_types_must_be_exceptions() -> None:
    """Counting KeyboardInterrupt as a dependency failure is refused at construction."""
    with pytest.raises(ConfigError, match="failure_types"):
        CircuitBreaker("api", failure_types=(KeyboardInterrupt,))


def test_stays_closed_below_min_calls_even_when_every_call_fails(clock: FakeClock) -> None:
    """Nine failures of nine calls do not open a breaker that needs ten calls."""
    breaker = _breaker(clock)
    _fail(breaker, 9)
    assert breaker.state is CLOSED


def test_opens_once_min_calls_reach_the_failure_rate(clock: FakeClock, changes: EventLog) -> None:
    """Five failures in ten calls meet a 0.5 failure rate and open the breaker."""
    breaker = _breaker(clock)
    for _ in range(5):
        _call(breaker)
    _fail(breaker, 4)
    assert breaker.state is CLOSED
    _fail(breaker)
    assert breaker.state is OPEN
    assert _reasons(changes) == ["5 of 10 calls failed (rate 0.50 >= 0.50)"]


def test_the_window_slides_over_the_last_calls(clock: FakeClock) -> None:
    """Old failures leave the window: alternating runs below the rate never open it."""
    breaker = _breaker(clock)
    for _ in range(10):
        _fail(breaker, 4)
        for _ in range(6):
            _call(breaker)
    assert breaker.state is CLOSED


def test_open_fails_fast_without_calling_and_says_when_it_probes(clock: FakeClock) -> None:
    """While open no call is made; retry_after_s is the open time still to go."""
    breaker = _tripped(clock)
    clock.advance(12.0)
    down = _refused(breaker)
    assert down.retry_after_s == pytest.approx(18.0)
    assert down.dependency == "api"
    assert "api" in str(down)
    assert "10 of 10 calls failed" in str(down)


def test_half_opens_after_open_s_and_admits_exactly_the_probe_slots(clock: FakeClock) -> None:
    """After open_s two probes are let through at once; a third concurrent call is refused."""
    breaker = _tripped(clock, half_open_probes=2)
    clock.advance(30.0)
    with breaker.guard():
        assert breaker.state is HALF_OPEN
        with breaker.guard():
            down = _refused(breaker)
    assert down.retry_after_s is None
    assert breaker.state is CLOSED


def test_closes_only_after_all_probes_succeed(clock: FakeClock) -> None:
    """One successful probe of two keeps it half-open; the second closes it."""
    breaker = _tripped(clock, half_open_probes=2)
    clock.advance(30.0)
    _call(breaker)
    assert breaker.state is HALF_OPEN
    _call(breaker)
    assert breaker.state is CLOSED
    _fail(breaker, 9)
    assert breaker.state is CLOSED  # a fresh window after closing


def test_a_probe_failure_reopens_for_another_open_s(clock: FakeClock) -> None:
    """A failed probe reopens the breaker, and the open time starts again."""
    breaker = _tripped(clock)
    clock.advance(31.0)
    _call(breaker)
    _fail(breaker)
    assert breaker.state is OPEN
    assert _refused(breaker).retry_after_s == pytest.approx(30.0)


def test_a_slow_probe_reopens(clock: FakeClock) -> None:
    """A probe that takes longer than slow_call_s is not a sign of recovery."""
    breaker = _tripped(clock, slow_call_s=5.0)
    clock.advance(30.0)
    _call(breaker, took=6.0)
    assert breaker.state is OPEN


def test_opens_on_the_slow_call_rate(clock: FakeClock, changes: EventLog) -> None:
    """Calls that succeed but take too long open the breaker once their share is reached."""
    breaker = _breaker(clock, min_calls=4, window=4, slow_call_s=2.0, slow_rate=0.75)
    _call(breaker, took=0.5)
    for _ in range(3):
        _call(breaker, took=2.5)
    assert breaker.state is OPEN
    assert _reasons(changes) == ["3 of 4 calls took over 2 s (rate 0.75 >= 0.75)"]


@pytest.mark.parametrize(
    "error", [SourceRejected("401 unauthorized"), KeyboardInterrupt(), asyncio.CancelledError()]
)
def test_permanent_errors_and_interrupts_are_not_failures(
    error: BaseException, clock: FakeClock
) -> None:
    """A 4xx or a cancellation says nothing about the dependency and leaves unchanged."""
    breaker = _breaker(clock, min_calls=2, window=2)
    for _ in range(5):
        with pytest.raises(type(error)) as caught:
            _call(breaker, error)
        assert caught.value is error
    assert breaker.state is CLOSED


def test_an_interrupted_probe_frees_its_slot(clock: FakeClock) -> None:
    """A cancelled probe gives its slot back, so the breaker can still close."""
    breaker = _tripped(clock, half_open_probes=1)
    clock.advance(30.0)
    with pytest.raises(asyncio.CancelledError):
        _call(breaker, asyncio.CancelledError())
    assert breaker.state is HALF_OPEN
    _call(breaker)
    assert breaker.state is CLOSED


def test_failure_types_add_driver_errors_to_the_failures(clock: FakeClock) -> None:
    """Exceptions named in failure_types count as failures and are raised unchanged."""
    breaker = CircuitBreaker(
        "api", policy=BreakerPolicy(window=2, min_calls=2), clock=clock, failure_types=(OSError,)
    )
    for _ in range(2):
        with pytest.raises(ConnectionResetError):
            _call(breaker, ConnectionResetError("reset"))
    assert breaker.state is OPEN


def test_allow_and_record_work_without_a_with_block(clock: FakeClock) -> None:
    """allow() admits or raises, record() feeds the same state machine, release() frees a slot."""
    breaker = _breaker(clock, half_open_probes=1)
    for _ in range(10):
        breaker.allow()
        breaker.record(False, 0.1)
    with pytest.raises(DependencyDown):
        breaker.allow()
    clock.advance(30.0)
    breaker.allow()
    breaker.release()
    breaker.allow()
    breaker.record(True, 0.1)
    assert breaker.state is CLOSED


def test_the_happy_path_writes_nothing_and_reads_once_per_sync_s(clock: FakeClock) -> None:
    """1,000 successful calls over 10 s of fake time: no save, at most one load per second."""
    store = CountingStore()
    breaker = _breaker(clock, store, sync_s=1.0)
    for _ in range(1000):
        _call(breaker)
        clock.advance(0.01)
    assert store.saves == 0
    assert 1 <= store.loads <= 10 / 1.0 + 1


def test_the_lock_is_not_held_around_the_call(clock: FakeClock) -> None:
    """Another thread completes a guarded call while this thread is inside one."""
    breaker = _breaker(clock)
    done = threading.Event()

    def other_call() -> None:
        _call(breaker)
        done.set()

    with breaker.guard():
        worker = threading.Thread(target=other_call)
        worker.start()
        assert done.wait(5.0)
    worker.join()


def test_concurrent_threads_get_exactly_the_probe_slots(clock: FakeClock) -> None:
    """Of 16 threads arriving together at a half-open breaker, exactly three are admitted."""
    breaker = _tripped(clock, half_open_probes=3)
    clock.advance(30.0)
    barrier = threading.Barrier(16)
    admitted: list[bool] = []

    def arrive() -> None:
        barrier.wait()
        try:
            breaker.allow()
        except DependencyDown:
            admitted.append(False)
        else:
            admitted.append(True)

    threads = [threading.Thread(target=arrive) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert admitted.count(True) == 3


def test_breaker_changes_are_emitted_in_order(clock: FakeClock, changes: EventLog) -> None:
    """A full cycle and a failed probe emit six BreakerChanged events of the run, in order."""
    breaker = _tripped(clock)
    clock.advance(30.0)
    _call(breaker)
    _call(breaker)
    _fail(breaker, 10)
    clock.advance(30.0)
    _fail(breaker)
    assert changes.kinds() == ["breaker.changed"] * 6
    assert [(e.previous, e.state) for e in _changes(changes)] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
    ]
    assert _reasons(changes)[2] == "2 probe calls succeeded"
    assert _reasons(changes)[5] == "a probe call failed (SourceUnavailable)"
    assert {e.dependency for e in _changes(changes)} == {"api"}


def test_a_breaker_opened_elsewhere_is_seen_within_sync_s(clock: FakeClock) -> None:
    """A second breaker on the same store fails fast once its sync interval has passed."""
    store = MemoryBreakerStore()
    other = _breaker(clock, store, sync_s=2.0)
    _call(other)
    _tripped(clock, store)
    _call(other)  # its last read is younger than sync_s: it still trusts it
    clock.advance(2.0)
    assert _refused(other).retry_after_s == pytest.approx(28.0)


def test_a_lost_compare_and_set_adopts_the_stored_state(
    clock: FakeClock, changes: EventLog
) -> None:
    """Two breakers trip on one store: the second loses the race, adopts the first's record and
    emits nothing."""
    store = MemoryBreakerStore()
    first, second = _breaker(clock, store, sync_s=60.0), _breaker(clock, store, sync_s=60.0)
    assert second.state is CLOSED  # read now; not again for 60 s
    _fail(first, 10)
    clock.advance(5.0)
    _fail(second, 10)
    assert second.state is OPEN
    assert [(e.previous, e.state) for e in _changes(changes)] == [("closed", "open")]
    assert _refused(second).retry_after_s == pytest.approx(25.0)
    record = store.load("api")
    assert record is not None
    assert record.version == 1


def test_a_store_outage_keeps_the_local_state_and_writes_it_later(clock: FakeClock) -> None:
    """While the store is down the breaker still opens here; the next sync writes it."""
    store = CountingStore()
    breaker = _breaker(clock, store)
    assert breaker.state is CLOSED
    store.down = True
    _fail(breaker, 10)
    assert breaker.state is OPEN
    assert store.inner.load("api") is None
    store.down = False
    clock.advance(1.0)
    assert breaker.state is OPEN
    record = store.inner.load("api")
    assert record is not None
    assert (record.state, record.version) == (OPEN, 1)



@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
def test_a_stale_version_loses_the_compare_and_set(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Only the writer that saw the stored version may replace it; the first insert wins once
    (in memory, and in the state store on SQLite and on PostgreSQL)."""
    store: BreakerStore = MemoryBreakerStore()
    if kind == "sqlite":
        store = SqlBreakerStore.from_url(f"sqlite:///{tmp_path / 'state.db'}")
    elif kind == "postgres":
        store = SqlBreakerStore.from_url(request.getfixturevalue("pg_url"))
    opened = BreakerRecord("api", OPEN, 1.0, "down", 1)
    assert store.load("api") is None
    assert store.save(opened, expected_version=0)
    assert not store.save(BreakerRecord("api", OPEN, 2.0, "late", 1), expected_version=0)
    assert store.load("api") == opened
    half = BreakerRecord("api", HALF_OPEN, 1.0, "probing", 2)
    assert store.save(half, expected_version=1)
    assert not store.save(BreakerRecord("api", CLOSED, None, "stale", 2), expected_version=1)
    assert store.load("api") == half


def test_two_processes_share_one_breaker(state_url: str) -> None:
    """A breaker opened by another process fails fast here; when that process's probes close
    it, this one sees it closed within sync_s (on SQLite and on PostgreSQL)."""
    url = state_url
    assert _child(url, "fail", 6) == ["open", "4", "2"]
    breaker = CircuitBreaker(DEPENDENCY, policy=POLICY, store=SqlBreakerStore.from_url(url))
    assert breaker.state is OPEN
    down = _refused(breaker)
    assert down.retry_after_s is not None
    assert 0.0 < down.retry_after_s <= POLICY.open_s
    time.sleep(down.retry_after_s + 0.05)
    assert _child(url, "succeed", 3) == ["closed", "3", "0"]
    closed_at = time.monotonic()
    while breaker.state is not CLOSED:
        assert time.monotonic() - closed_at < POLICY.sync_s + 0.5
        time.sleep(0.01)
    calls: list[int] = []
    with breaker.guard():
        calls.append(1)
    assert calls == [1]


def test_guard_async_fails_fast_probes_and_closes(clock: FakeClock) -> None:
    """The async guard opens, refuses, admits exactly the probes concurrently, and closes."""
    breaker = _breaker(clock, half_open_probes=2)
    asyncio.run(_async_cycle(breaker, clock))
    assert breaker.state is CLOSED


def test_guard_async_does_not_count_cancellation(clock: FakeClock) -> None:
    """Cancelled tasks inside the async guard are not failures; the CancelledError propagates."""
    breaker = _breaker(clock, min_calls=2, window=2)

    async def cancelled() -> None:
        async with breaker.guard_async():
            raise asyncio.CancelledError

    for _ in range(5):
        with pytest.raises(asyncio.CancelledError):
            asyncio.run(cancelled())
    assert breaker.state is CLOSED


# -- helpers ----------------------------------------------------------------------------------


def _child(url: str, action: str, count: int) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(CHILD), url, action, str(count)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


async def _async_call(breaker: CircuitBreaker, error: BaseException | None = None) -> None:
    async with breaker.guard_async():
        if error is not None:
            raise error


async def _async_cycle(breaker: CircuitBreaker, clock: FakeClock) -> None:
    for _ in range(10):
        with pytest.raises(SourceUnavailable):
            await _async_call(breaker, SourceUnavailable("down"))
    assert breaker.state is OPEN
    with pytest.raises(DependencyDown):
        await _async_call(breaker)
    clock.advance(30.0)
    gate, entered = asyncio.Event(), asyncio.Event()
    inside: list[int] = []

    async def probe() -> None:
        async with breaker.guard_async():
            inside.append(1)
            if len(inside) == 2:
                entered.set()
            await gate.wait()

    probes = [asyncio.create_task(probe()) for _ in range(2)]
    await asyncio.wait_for(entered.wait(), 5.0)
    with pytest.raises(DependencyDown):
        await _async_call(breaker)
    gate.set()
    await asyncio.gather(*probes)
