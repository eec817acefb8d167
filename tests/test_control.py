"""Control, the facade of the service: reads from the store and catalog, actions on the ledger.

The helpers here (``Served``, ``served``) build a small served folder (a real pipeline run into
DuckDB with dead letters, and one never run); the API, webhook and secrets tests use them too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mendflow.exceptions import ConfigError, PipelineBusy, UnknownPipeline
from mendflow.remediation.diagnosis import Diagnosis, FailureClass
from mendflow.resilience.breaker_state import BreakerRecord, BreakerState
from mendflow.server.catalog import Catalog
from mendflow.server.control import Control
from mendflow.state.breakers import SqlBreakerStore
from mendflow.state.store import StateStore
from mendflow.testing import FakeClock
from tests.conftest import write_orders, write_pipeline

START = 1_700_000_000.0
ORDERS = 50
BAD_EVERY = 10  # 5 malformed amounts: 5 dead letters


@dataclass
class Served:
    """A served folder: its control, store, clock and the run of ``orders``."""

    control: Control
    store: StateStore
    clock: FakeClock
    folder: Path
    run_id: str


def served(
    tmp_path: Path, *, state_url: str | None = None, orders: dict[str, Any] | None = None,
    run: bool = True,
) -> Served:
    """Pipelines ``orders`` (run once: 45 rows loaded, 5 dead letters; freshness 600 s, a YAML
    maintenance window in 2030) and ``idle`` (never run, every 60 s) served from one folder."""
    drops = tmp_path / "drops"
    drops.mkdir(exist_ok=True)
    write_orders(drops / "orders-0.jsonl", start=1, count=ORDERS, bad_every=BAD_EVERY)
    folder = tmp_path / "pipelines"
    folder.mkdir(exist_ok=True)
    spec: dict[str, Any] = {
        "name": "orders",
        "source": {"type": "files", "path": str(drops / "*.jsonl")},
        "destination": {"type": "duckdb", "path": str(tmp_path / "w.duckdb"), "table": "orders"},
        "write_mode": "merge", "primary_key": "id", "columns": {"amount": "double"},
        "freshness_s": 600,
        "maintenance": [{"start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z"}],
    }
    write_pipeline(folder / "orders.yaml", **(spec | (orders or {})))
    write_pipeline(
        folder / "idle.yaml", name="idle",
        source={"type": "files", "path": str(tmp_path / "none" / "*.jsonl")},
        destination={"type": "duckdb", "path": str(tmp_path / "idle.duckdb"), "table": "t"},
        schedule={"every_s": 60},
    )
    store = StateStore(state_url or f"sqlite:///{tmp_path / 'state.db'}")
    clock = FakeClock(start=START)
    catalog = Catalog.load([folder])
    run_id = ""
    if run:
        pipeline = catalog.get("orders").pipeline
        try:
            run_id = pipeline.run(state=store, clock=clock).run_id
        finally:
            pipeline.destination.close()
    return Served(Control(store, catalog, clock=clock), store, clock, folder, run_id)


def open_incident(control: Control, pipeline: str = "orders") -> str:
    """A new incident of ``pipeline`` (stale), its id."""
    diagnosis = Diagnosis(FailureClass.STALE, "alert:test", "Stale", None, "stale")
    return control.ledger.open(pipeline=pipeline, run_id="", diagnosis=diagnosis,
                               at=control.clock.now()).incident_id


def actions(control: Control, incident_id: str) -> list[tuple[str, str]]:
    """(action, outcome) of each action recorded on the incident."""
    return [(a["action"], a["outcome"]) for a in control.incident(incident_id)["actions"]]


def open_breaker(store: StateStore, dependency: str, *, at: float = START) -> None:
    """Record ``dependency``'s breaker as open in the shared store."""
    saved = SqlBreakerStore(store.engine).save(
        BreakerRecord(dependency, BreakerState.OPEN, at, "5 failures in 10 calls", 1),
        expected_version=0,
    )
    assert saved


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Served]:
    """The served folder, its store closed after the test."""
    setup = served(tmp_path)
    yield setup
    setup.store.close()


def test_pipelines_report_health_freshness_and_last_run(env: Served) -> None:
    """A fresh pipeline is healthy with its lag and last run; one never run says so; stale
    once its data is older than freshness_s."""
    control = env.control
    by_name = {p["name"]: p for p in control.pipelines()}
    assert sorted(by_name) == ["idle", "orders"]
    orders, idle = by_name["orders"], by_name["idle"]
    assert orders["health"] == "healthy"
    assert not orders["stale"]
    assert orders["last_success_at"] == START
    assert orders["freshness_lag_s"] == 0.0
    assert orders["last_run"]["run_id"] == env.run_id
    assert orders["last_run"]["dead_letters"] == ORDERS // BAD_EVERY
    assert (orders["freshness_s"], orders["open_incidents"], orders["paused"]) == (600, 0, False)
    assert idle["health"] == "never_run"
    assert idle["schedule"] == "every 60s"
    env.clock.advance(601)
    stale = control.pipeline("orders")
    assert (stale["health"], stale["stale"], stale["freshness_lag_s"]) == ("stale", True, 601)
    with pytest.raises(UnknownPipeline):
        control.pipeline("nope")


def test_runs_events_and_dead_letters_come_from_the_store(env: Served) -> None:
    """Runs newest first, a run's events in order, and the dead letters paged oldest first."""
    control = env.control
    [run] = control.runs(pipeline="orders")
    assert (run["run_id"], run["status"], run["rows_read"]) == (env.run_id, "succeeded", ORDERS)
    assert control.runs(pipeline="idle") == []
    kinds = [e["kind"] for e in control.run_events(env.run_id)]
    assert kinds[0] == "run.started"
    assert kinds[-1] == "run.finished"
    with pytest.raises(LookupError):
        control.run_events("no-such-run")
    letters = control.dead_letters("orders", limit=100)
    assert len(letters) == ORDERS // BAD_EVERY
    assert all('"n/a"' in letter["record"] for letter in letters)
    page = control.dead_letters("orders", limit=2, offset=1)
    assert [d["id"] for d in page] == [d["id"] for d in letters[1:3]]
    with pytest.raises(ConfigError):
        control.dead_letters("orders", limit=0)


def test_rerun_queues_one_job_and_lands_on_the_incident(env: Served) -> None:
    """A rerun queues a job; a second finds it queued and gives it the incident, recorded
    as the incident's rerun action both times."""
    control = env.control
    first = control.rerun("orders", reason="manual")
    assert first is not None
    assert first.incident_id is None
    incident_id = open_incident(control)
    assert control.rerun("orders", reason="alert", incident_id=incident_id) is None
    [queued] = control.job_list(pipeline="orders")
    assert (queued.job_id, queued.incident_id) == (first.job_id, incident_id)
    assert actions(control, incident_id) == [("rerun", "already_queued")]
    claimed = control.jobs.claim("w1")
    assert claimed is not None
    assert control.jobs.finish(claimed.job_id, "w1", status="succeeded")
    job = control.rerun("orders", reason="alert", incident_id=incident_id)
    assert job is not None
    assert job.incident_id == incident_id
    assert actions(control, incident_id)[-1] == ("rerun", "queued")
    with pytest.raises(UnknownPipeline):
        control.rerun("nope")


def test_pause_and_resume_are_recorded_on_the_incident(env: Served) -> None:
    """Pause then resume change the schedule state once each, and land on the incident."""
    control = env.control
    incident_id = open_incident(control)
    assert control.pause("orders", reason="bad upstream", incident_id=incident_id)
    assert not control.pause("orders", reason="again")
    view = control.pipeline("orders")
    assert (view["paused"], view["health"], view["paused_reason"]) == (
        True, "paused", "bad upstream")
    assert control.resume("orders", incident_id=incident_id)
    assert not control.resume("orders", incident_id=incident_id)
    assert actions(control, incident_id) == [
        ("pause", "paused"), ("resume", "resumed"), ("resume", "not_paused")]
    assert not control.pipeline("orders")["paused"]


def test_breakers_reset_and_probe_through_the_shared_store(env: Served) -> None:
    """An open breaker probes to half_open and resets to closed in the shared record (so
    every process adopts it); both land on the incident; an unknown breaker is a LookupError."""
    control, store = env.control, env.store
    open_breaker(store, "orders-api")
    env.clock.advance(30)
    [listed] = control.breakers()
    assert (listed["dependency"], listed["state"], listed["open_for_s"]) == (
        "orders-api", "open", 30)
    incident_id = open_incident(control)
    assert control.probe_breaker("orders-api", incident_id=incident_id) == "half_open"
    assert SqlBreakerStore(store.engine).load("orders-api").state == BreakerState.HALF_OPEN  # type: ignore[union-attr]
    assert control.reset_breaker("orders-api", incident_id=incident_id) == "half_open"
    record = SqlBreakerStore(store.engine).load("orders-api")
    assert record is not None
    assert (record.state, record.opened_at) == (BreakerState.CLOSED, None)
    assert control.reset_breaker("orders-api", incident_id=incident_id) == "closed"
    assert control.probe_breaker("orders-api") == "closed"
    assert actions(control, incident_id) == [
        ("probe", "half_open"), ("reset_breaker", "closed"), ("reset_breaker", "already_closed")]
    with pytest.raises(LookupError):
        control.reset_breaker("never-seen")


def test_replay_holds_the_lease_and_is_refused_while_a_worker_runs(env: Served) -> None:
    """Replay runs the dead letters again (still malformed: they stay); while a worker holds
    the pipeline's lease it is refused with PipelineBusy."""
    control = env.control
    result = control.replay("orders")
    assert (result.loaded, result.failed) == (0, ORDERS // BAD_EVERY)
    one = control.dead_letters("orders")[0]["id"]
    assert control.replay("orders", ids=[one]).failed == 1
    control.rerun("orders")
    assert control.jobs.claim("w1") is not None
    with pytest.raises(PipelineBusy):
        control.replay("orders")
    assert [d["attempts"] for d in control.dead_letters("orders")][:2] == [3, 2]  # 1 at first


def test_maintenance_windows_from_yaml_and_the_api(env: Served) -> None:
    """Stored windows and YAML windows both count; a window ending before it starts is
    refused."""
    control = env.control
    assert not control.in_maintenance("orders")
    assert control.in_maintenance("orders", at=1_893_456_000.0 + 60)  # 2030-01-01 00:01 UTC
    window = control.add_maintenance("orders", starts_at=START + 10, ends_at=START + 20,
                                     reason="upgrade")
    assert (window["pipeline"], window["reason"]) == ("orders", "upgrade")
    assert control.in_maintenance("orders", at=START + 15)
    assert not control.in_maintenance("orders", at=START + 20)
    assert not control.in_maintenance("idle", at=START + 15)
    with pytest.raises(ConfigError):
        control.add_maintenance("orders", starts_at=START, ends_at=START, reason="")
    with pytest.raises(UnknownPipeline):
        control.add_maintenance("nope", starts_at=START, ends_at=START + 1, reason="")


def test_service_levels_use_each_pipelines_freshness(env: Served) -> None:
    """SLO figures come per served pipeline with its own freshness_s; incidents show."""
    control = env.control
    open_incident(control)
    env.clock.advance(1200)
    [level] = control.service_levels()
    assert (level["pipeline"], level["freshness_s"]) == ("orders", 600)
    assert level["availability"] == pytest.approx(0.5)
    assert (level["incidents"], level["open_incidents"]) == (1, 1)


def test_incidents_list_and_lookup(env: Served) -> None:
    """Incidents come newest first with their actions; an unknown id is a LookupError."""
    control = env.control
    first = open_incident(control)
    env.clock.advance(1)
    second = open_incident(control)
    assert [i["incident_id"] for i in control.incidents(pipeline="orders")] == [second, first]
    assert control.incident(first[:12])["incident_id"] == first
    with pytest.raises(LookupError):
        control.incident("0000")
    assert control.incidents(pipeline="idle") == []
