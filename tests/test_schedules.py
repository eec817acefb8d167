"""Schedule state in the store: due times as a compare-and-set, pause and resume, maintenance
windows; and the scheduler that queues due runs and reaps silent jobs; on SQLite and on
PostgreSQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from mendflow.events import RunStarted
from mendflow.exceptions import ConfigError
from mendflow.schedule import Schedule, Window
from mendflow.server.catalog import Catalog, Entry
from mendflow.server.scheduler import Scheduler
from mendflow.state.jobs import JobQueue
from mendflow.state.schedules import Schedules, ScheduleState
from mendflow.state.store import StateStore
from mendflow.testing import FakeClock

EVERY = Schedule(every_s=300)





@pytest.fixture
def schedules(store: StateStore, clock: FakeClock) -> Schedules:
    """Schedules on the store and the fake clock."""
    return Schedules(store, clock=clock)


def _ran(store: StateStore, pipeline: str, at: float) -> None:
    store.record(RunStarted(run_id=f"r{at}", pipeline=pipeline, at=at, write_mode="append"))


def test_never_run_pipeline_is_due_at_once(schedules: Schedules) -> None:
    """A pipeline that never ran is due at the first look, then every ``every_s``."""
    t = 1000.0
    assert schedules.due("p", EVERY, now=t)
    assert not schedules.due("p", EVERY, now=t)
    assert schedules.state("p") == ScheduleState("p", t + 300, False, "")
    assert not schedules.due("p", EVERY, now=t + 299.9)
    assert schedules.due("p", EVERY, now=t + 300)
    assert not schedules.due("p", EVERY, now=t + 300)


def test_first_look_waits_for_the_next_due_time_after_the_last_run(
    schedules: Schedules, store: StateStore
) -> None:
    """A pipeline that ran recently is due ``every_s`` after that run started, not at once."""
    _ran(store, "p", 900.0)
    assert not schedules.due("p", EVERY, now=1000.0)
    assert schedules.state("p").next_at == 1200.0
    assert schedules.due("p", EVERY, now=1200.0)


def test_missed_due_times_yield_one_run(schedules: Schedules, store: StateStore) -> None:
    """After a long stop the schedule runs once and goes on from now (no backlog)."""
    _ran(store, "p", 0.0)
    assert schedules.due("p", EVERY, now=10_000.0)
    assert not schedules.due("p", EVERY, now=10_000.0)
    assert schedules.due("p", EVERY, now=20_000.0)
    assert not schedules.due("p", EVERY, now=20_100.0)
    assert schedules.state("p").next_at == 20_300.0


def test_a_sooner_schedule_takes_effect_at_once(schedules: Schedules, store: StateStore) -> None:
    """A schedule edited to come sooner than the stored due time is followed right away."""
    assert schedules.due("p", Schedule(every_s=3600), now=0.0)
    _ran(store, "p", 0.0)
    assert not schedules.due("p", Schedule(every_s=60), now=30.0)
    assert schedules.state("p").next_at == 60.0
    assert schedules.due("p", Schedule(every_s=60), now=60.0)


def test_cron_schedule_is_due_at_fire_times(schedules: Schedules) -> None:
    """A cron schedule is due once at each fire time."""
    cron = Schedule(cron="*/5 * * * *")
    start = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    assert schedules.due("p", cron, now=start + 10)
    assert schedules.state("p").next_at == start + 300
    assert not schedules.due("p", cron, now=start + 299)
    assert schedules.due("p", cron, now=start + 301)
    assert not schedules.due("p", cron, now=start + 302)


def test_schedulers_sharing_a_store_fire_once(state_url: str) -> None:
    """Several schedulers on their own connections yield one due per due time."""
    stores = [StateStore(state_url) for _ in range(4)]
    try:
        for now in (1000.0, 1300.0, 1650.0):
            wins: list[bool] = []
            gate = threading.Barrier(len(stores))

            def look(store: StateStore, now: float = now, wins: list[bool] = wins,
                     gate: threading.Barrier = gate) -> None:
                gate.wait()
                wins.append(Schedules(store).due("p", EVERY, now=now))

            threads = [threading.Thread(target=look, args=(s,)) for s in stores]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            assert sorted(wins) == [False, False, False, True]
    finally:
        for s in stores:
            s.close()


def test_paused_pipeline_is_never_due(schedules: Schedules) -> None:
    """While paused nothing is due; after resuming, a due time that passed fires once."""
    assert schedules.due("p", EVERY, now=0.0)
    assert schedules.pause("p", reason="migrating the table")
    assert not schedules.pause("p", reason="again")
    assert schedules.state("p").paused_reason == "migrating the table"
    assert not schedules.due("p", EVERY, now=1000.0)
    assert schedules.resume("p")
    assert not schedules.resume("p")
    assert schedules.state("p") == ScheduleState("p", 300.0, False, "")
    assert schedules.due("p", EVERY, now=1000.0)
    assert not schedules.due("p", EVERY, now=1000.0)


def test_pausing_an_unscheduled_pipeline(schedules: Schedules) -> None:
    """A pipeline can be paused before its schedule was ever looked at."""
    assert schedules.state("q") == ScheduleState("q", None, False, "")
    assert schedules.pause("q", reason="hold")
    assert not schedules.due("q", EVERY, now=5.0)
    assert schedules.resume("q")
    assert schedules.due("q", EVERY, now=5.0)
    assert schedules.state("q").next_at == 305.0


def test_stored_and_static_maintenance_windows(schedules: Schedules, clock: FakeClock) -> None:
    """A stored window covers [starts_at, ends_at) of its pipeline only; static windows too."""
    window = schedules.add_window("p", starts_at=100.0, ends_at=200.0, reason="upgrade")
    assert window.pipeline == "p"
    assert window.reason == "upgrade"
    assert not schedules.in_maintenance("p", 99.0)
    assert schedules.in_maintenance("p", 100.0)
    assert schedules.in_maintenance("p", 199.5)
    assert not schedules.in_maintenance("p", 200.0)
    assert not schedules.in_maintenance("other", 150.0)
    static = (Window(start=500.0, end=600.0),)
    assert schedules.in_maintenance("other", 550.0, static)
    assert not schedules.in_maintenance("other", 600.0, static)


def test_windows_are_listed_soonest_first(schedules: Schedules) -> None:
    """Stored windows list soonest first, per pipeline, optionally only those not over yet."""
    late = schedules.add_window("p", starts_at=500.0, ends_at=600.0, reason="b")
    soon = schedules.add_window("p", starts_at=100.0, ends_at=200.0, reason="a")
    schedules.add_window("q", starts_at=0.0, ends_at=50.0, reason="c")
    assert schedules.windows("p") == [soon, late]
    assert schedules.windows("p", ending_after=200.0) == [late]
    assert [w.pipeline for w in schedules.windows()] == ["q", "p", "p"]
    assert late.as_dict()["starts_at"] == 500.0


def test_window_must_end_after_it_starts(schedules: Schedules) -> None:
    """A window ending before (or when) it starts is a ConfigError saying so."""
    with pytest.raises(ConfigError, match=r"ends .* before it starts"):
        schedules.add_window("p", starts_at=10.0, ends_at=10.0, reason="")


# -- the scheduler -------------------------------------------------------------------------------


def _catalog(*entries: tuple[str, Schedule | None, tuple[Window, ...]]) -> Catalog:
    return Catalog(Entry(name, Path(f"{name}.yaml"), schedule, None, windows, None)
                   for name, schedule, windows in entries)


def test_tick_queues_due_pipelines_once(store: StateStore, clock: FakeClock) -> None:
    """A tick queues each scheduled pipeline that is due, once per due time; unscheduled ones
    never."""
    scheduler = Scheduler(store, _catalog(("a", EVERY, ()), ("manual", None, ())), clock)
    first = scheduler.tick()
    assert [(j.pipeline, j.reason) for j in first.enqueued] == [("a", "schedule")]
    assert scheduler.tick().enqueued == ()
    JobQueue(store).cancel(first.enqueued[0].job_id)
    clock.advance(300)
    assert [j.pipeline for j in scheduler.tick().enqueued] == ["a"]


def test_schedulers_sharing_a_store_queue_one_job(state_url: str, clock: FakeClock) -> None:
    """Two schedulers on their own connections ticking at the same time queue one job."""
    stores = [StateStore(state_url), StateStore(state_url)]
    try:
        catalog = _catalog(("a", EVERY, ()))
        ticks = [Scheduler(s, catalog, clock).tick() for s in stores]
        assert sum(len(t.enqueued) for t in ticks) == 1
        assert len(JobQueue(stores[0]).jobs(pipeline="a")) == 1
    finally:
        for s in stores:
            s.close()


def test_paused_pipelines_are_not_queued(store: StateStore, clock: FakeClock) -> None:
    """A paused pipeline is skipped; once resumed, its due run is queued."""
    scheduler = Scheduler(store, _catalog(("a", EVERY, ())), clock)
    scheduler.schedules.pause("a", reason="table migration")
    assert scheduler.tick().enqueued == ()
    scheduler.schedules.resume("a")
    assert len(scheduler.tick().enqueued) == 1


def test_maintenance_defers_scheduled_runs(store: StateStore, clock: FakeClock) -> None:
    """Inside a YAML or a stored maintenance window nothing is queued; the due run is queued
    when the window ends."""
    now = clock.now()
    static = (Window(start=now - 10, end=now + 100),)
    scheduler = Scheduler(store, _catalog(("a", EVERY, static), ("b", EVERY, ())), clock)
    scheduler.schedules.add_window("b", starts_at=now, ends_at=now + 50, reason="upgrade")
    assert scheduler.tick().enqueued == ()
    clock.advance(50)
    assert [j.pipeline for j in scheduler.tick().enqueued] == ["b"]
    clock.advance(50)
    assert [j.pipeline for j in scheduler.tick().enqueued] == ["a"]


def test_tick_reaps_silent_jobs(store: StateStore, clock: FakeClock) -> None:
    """A tick marks jobs silent past the lease timeout lost and queues their relaunch."""
    queue = JobQueue(store, clock=clock)
    queue.enqueue("a", reason="manual")
    job = queue.claim("w1")
    assert job is not None
    scheduler = Scheduler(store, _catalog(), clock, lease_timeout_s=10)
    assert scheduler.tick().reaped == ()
    clock.advance(11)
    assert [j.job_id for j in scheduler.tick().reaped] == [job.job_id]
    assert [j.reason for j in queue.jobs(status="queued")] == ["relaunch"]


def test_one_failing_pipeline_does_not_stop_the_tick(
    store: StateStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A pipeline whose scheduling raises is logged and the others are still queued."""
    scheduler = Scheduler(store, _catalog(("a", EVERY, ()), ("b", EVERY, ())), clock)
    real_due = scheduler.schedules.due

    def due(pipeline: str, schedule: Schedule, *, now: float) -> bool:
        if pipeline == "a":
            raise RuntimeError("store hiccup")
        return real_due(pipeline, schedule, now=now)

    monkeypatch.setattr(scheduler.schedules, "due", due)
    assert [j.pipeline for j in scheduler.tick().enqueued] == ["b"]
    assert "could not schedule pipeline a" in caplog.text


def test_run_forever_ticks_until_stopped(store: StateStore) -> None:
    """The scheduler loop queues due runs and returns once its stop event is set."""
    scheduler = Scheduler(store, _catalog(("a", EVERY, ())))
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run_forever, args=(stop, 0.01))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not JobQueue(store).jobs(pipeline="a") and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(JobQueue(store).jobs(pipeline="a")) == 1


def test_scheduler_takes_a_store_or_a_holder_of_one(store: StateStore) -> None:
    """The scheduler accepts the store or an object carrying it as ``.store``."""

    class Holder:
        def __init__(self, store: StateStore) -> None:
            self.store = store

    assert Scheduler(Holder(store), Catalog()).store is store
    with pytest.raises(TypeError, match="StateStore"):
        Scheduler(object(), Catalog())
