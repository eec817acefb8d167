"""Metrics: a populated state store scrapes to the expected samples; the batch timer's histogram."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from mendflow import metrics
from mendflow.events import (
    BatchLoaded,
    BatchQuarantined,
    BatchRead,
    BatchSkipped,
    RetryScheduled,
    RunFailed,
    RunFinished,
    RunStarted,
)
from mendflow.remediation.diagnosis import Diagnosis, FailureClass
from mendflow.remediation.ledger import Ledger
from mendflow.server.catalog import Catalog, Entry
from mendflow.state.schema import breakers, schedules
from mendflow.state.store import StateStore
from mendflow.testing import FakeClock
from tests._service import free_port

T0 = 1_700_000_000.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
Populated = tuple[StateStore, Catalog, FakeClock]


def scrape(reg: object) -> Samples:
    """Every sample of the registry's text exposition, by (name, labels)."""
    text = metrics.render(reg).decode()  # type: ignore[arg-type]
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    """The value of one sample (KeyError if it is absent)."""
    return samples[(name, frozenset(labels.items()))]


def run(store: StateStore, run_id: str, pipeline: str, at: float, *, ok: bool = True,
        loaded: int = 10, dead: int = 0, retries: int = 0, quarantined: int = 0) -> None:
    """Record one run of ``pipeline`` through the store's event hook."""
    ids: dict[str, Any] = {"run_id": run_id, "pipeline": pipeline}
    store.record(RunStarted(**ids, at=at, write_mode="append"))
    for attempt in range(retries):
        store.record(RetryScheduled(
            **ids, at=at, dependency="postgresql://u:hunter2@db/x", attempt=attempt + 1,
            delay_s=0.1, error="boom", error_type="OSError"))
    if quarantined:
        store.record(BatchQuarantined(
            **ids, at=at, batch_id="q", rows=quarantined, reason="r", error_type="E"))
    store.record(BatchLoaded(
        **ids, at=at + 1, batch_id="b", rows=loaded, dead_letters=dead, checkpoint={}))
    if ok:
        store.record(RunFinished(**ids, at=at + 2, rows_read=loaded + dead, rows_loaded=loaded,
                                 dead_letters=dead, batches=1, skipped=0, duration_s=2))
    else:
        store.record(RunFailed(**ids, at=at + 2, error="x", error_type="E", retryable=True,
                               duration_s=2))


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    """A fresh SQLite state store."""
    return StateStore(f"sqlite:///{tmp_path / 'state.db'}")


def populate(store: StateStore, tmp_path: Path) -> Populated:
    """Two pipelines' runs, an incident healed in 90 s, breakers, a paused schedule."""
    run(store, "r1", "orders", T0, loaded=100, dead=7, retries=2, quarantined=5)
    run(store, "r2", "orders", T0 + 100, ok=False, loaded=3)
    run(store, "r3", "orders", T0 + 200, loaded=50)          # last success ends at T0 + 202
    run(store, "r4", "drops", T0 + 10, ok=False, loaded=0)   # never succeeded, first at T0 + 10
    ledger = Ledger(store)
    diagnosis = Diagnosis(FailureClass.STALE, "orders", "", None, "stale")
    incident = ledger.open(pipeline="orders", run_id="r2", diagnosis=diagnosis, at=T0 + 100)
    ledger.act(incident.incident_id, action="rerun", outcome="tried", detail="", at=T0 + 101)
    ledger.act(incident.incident_id, action="verify", outcome="succeeded", detail="", at=T0 + 190)
    ledger.heal(incident.incident_id, at=T0 + 190)
    ledger.open(pipeline="drops", run_id="r4", diagnosis=diagnosis, at=T0 + 12)
    with store.engine.begin() as con:
        con.execute(breakers.insert(), [
            {"dependency": "postgresql://app:s3cret@db/x", "state": "open", "opened_at": T0 + 250,
             "reason": "", "version": 1, "updated_at": T0 + 250},
            {"dependency": "api", "state": "closed", "opened_at": None, "reason": "",
             "version": 2, "updated_at": T0},
        ])
        con.execute(schedules.insert().values(
            pipeline="drops", next_at=None, paused=True, paused_reason="x", updated_at=T0))
    catalog = Catalog([
        Entry("orders", tmp_path / "o.yaml", None, 3600.0, (), None),
        Entry("idle", tmp_path / "i.yaml", None, 60.0, (), None),
    ])
    return store, catalog, FakeClock(start=T0 + 302)


@pytest.fixture
def populated(store: StateStore, tmp_path: Path) -> Populated:
    """A SQLite store populated by ``populate``."""
    return populate(store, tmp_path)


def test_runs_rows_retries_and_dead_letters(populated: Populated) -> None:
    """Runs count by outcome, rows split loaded/dead-lettered/quarantined, retries and dead
    letters add up over each pipeline's runs."""
    store, catalog, clock = populated
    s = scrape(metrics.registry(store, catalog, clock=clock))
    assert sample(s, "mendflow_runs_total", pipeline="orders", outcome="succeeded") == 2
    assert sample(s, "mendflow_runs_total", pipeline="orders", outcome="failed") == 1
    assert sample(s, "mendflow_runs_total", pipeline="orders", outcome="interrupted") == 0
    assert sample(s, "mendflow_runs_total", pipeline="drops", outcome="failed") == 1
    assert sample(s, "mendflow_rows_total", pipeline="orders", outcome="loaded") == 153
    assert sample(s, "mendflow_rows_total", pipeline="orders", outcome="dead_lettered") == 2
    assert sample(s, "mendflow_rows_total", pipeline="orders", outcome="quarantined") == 5
    assert sample(s, "mendflow_dead_letters_total", pipeline="orders") == 7
    assert sample(s, "mendflow_retries_total", pipeline="orders") == 2
    assert sample(s, "mendflow_retries_total", pipeline="drops") == 0


def test_freshness_threshold_and_paused(populated: Populated) -> None:
    """Freshness counts from the last success (or the first run when none succeeded), the
    threshold comes from the catalog, and paused from the schedules; a never-run pipeline has no
    freshness sample."""
    store, catalog, clock = populated
    s = scrape(metrics.registry(store, catalog, clock=clock))
    assert sample(s, "mendflow_pipeline_freshness_seconds", pipeline="orders") == 100
    assert sample(s, "mendflow_pipeline_freshness_seconds", pipeline="drops") == 292
    assert ("mendflow_pipeline_freshness_seconds", frozenset({("pipeline", "idle")})) not in s
    assert sample(s, "mendflow_pipeline_freshness_threshold_seconds", pipeline="orders") == 3600
    assert sample(s, "mendflow_pipeline_freshness_threshold_seconds", pipeline="idle") == 60
    assert sample(s, "mendflow_pipeline_paused", pipeline="drops") == 1
    assert sample(s, "mendflow_pipeline_paused", pipeline="orders") == 0
    clock.advance(50)
    later = scrape(metrics.registry(store, catalog, clock=clock))
    assert sample(later, "mendflow_pipeline_freshness_seconds", pipeline="orders") == 150


def test_breakers_masked_with_open_seconds(populated: Populated) -> None:
    """Breaker state is 2 for open and 0 for closed, open seconds count from opened_at, and a
    password in the dependency never reaches the labels."""
    store, catalog, clock = populated
    reg = metrics.registry(store, catalog, clock=clock)
    s = scrape(reg)
    masked = "postgresql://app:***@db/x"
    assert sample(s, "mendflow_breaker_state", dependency=masked) == 2
    assert sample(s, "mendflow_breaker_open_seconds", dependency=masked) == 52
    assert sample(s, "mendflow_breaker_state", dependency="api") == 0
    assert sample(s, "mendflow_breaker_open_seconds", dependency="api") == 0
    text = metrics.render(reg)
    assert b"s3cret" not in text
    assert b"hunter2" not in text


def test_incidents_actions_and_time_to_recover(
    populated: Populated,
) -> None:
    """Incidents count by class, actions by action and outcome, and the healed incident's 90 s
    lands in the time-to-recover buckets from 120 s up."""
    store, catalog, clock = populated
    s = scrape(metrics.registry(store, catalog, clock=clock))
    assert sample(s, "mendflow_incidents_total", pipeline="orders", failure_class="stale") == 1
    assert sample(s, "mendflow_incidents_total", pipeline="drops", failure_class="stale") == 1
    assert sample(s, "mendflow_incident_actions_total", pipeline="orders", action="rerun",
                  outcome="tried") == 1
    assert sample(s, "mendflow_incident_actions_total", pipeline="orders", action="verify",
                  outcome="succeeded") == 1
    assert sample(s, "mendflow_time_to_recover_seconds_bucket", le="60.0") == 0
    assert sample(s, "mendflow_time_to_recover_seconds_bucket", le="120.0") == 1
    assert sample(s, "mendflow_time_to_recover_seconds_bucket", le="+Inf") == 1
    assert sample(s, "mendflow_time_to_recover_seconds_count") == 1
    assert sample(s, "mendflow_time_to_recover_seconds_sum") == 90
    assert sample(s, "mendflow_state_up") == 1


def test_state_down_scrapes_without_error(store: StateStore) -> None:
    """A store that cannot be read gives mendflow_state_up 0 instead of a failed scrape."""
    reg = metrics.registry(store)
    with store.engine.begin() as con:
        con.execute(sa.text("DROP TABLE mf_breakers"))
    s = scrape(reg)
    assert sample(s, "mendflow_state_up") == 0
    assert not any(name == "mendflow_runs_total" for name, _ in s)


def test_batch_timer_observes_read_to_loaded() -> None:
    """The timer observes each batch from batch.read to batch.loaded or batch.skipped, by the
    events' own times, and forgets the open batches of a run that ended."""
    timer = metrics.BatchTimer()
    clock = FakeClock(start=T0)
    ids: dict[str, Any] = {"run_id": "r", "pipeline": "orders"}
    timer(BatchRead(**ids, at=clock.now(), batch_id="a", rows=1, source="s"))
    clock.advance(0.3)
    timer(BatchLoaded(**ids, at=clock.now(), batch_id="a", rows=1, dead_letters=0, checkpoint={}))
    timer(BatchRead(**ids, at=clock.now(), batch_id="b", rows=1, source="s"))
    clock.advance(7)
    timer(BatchSkipped(**ids, at=clock.now(), batch_id="b", rows=1))
    timer(BatchRead(**ids, at=clock.now(), batch_id="c", rows=1, source="s"))
    timer(RunFailed(**ids, at=clock.now(), error="x", error_type="E", retryable=True,
                    duration_s=1))
    timer(BatchLoaded(**ids, at=clock.now() + 1, batch_id="c", rows=1, dead_letters=0,
                      checkpoint={}))
    s = scrape(metrics.registry(None, timer=timer))
    name = "mendflow_batch_duration_seconds"
    assert sample(s, f"{name}_count", pipeline="orders") == 2
    assert sample(s, f"{name}_sum", pipeline="orders") == pytest.approx(7.3)
    assert sample(s, f"{name}_bucket", pipeline="orders", le="0.5") == 1
    assert sample(s, f"{name}_bucket", pipeline="orders", le="5.0") == 1
    assert sample(s, f"{name}_bucket", pipeline="orders", le="10.0") == 2
    assert not any(n.startswith("mendflow_runs") for n, _ in s)


def test_every_exposed_name_is_declared(populated: Populated) -> None:
    """Each family a full registry exposes is declared in metrics.METRICS with its labels."""
    store, catalog, clock = populated
    text = metrics.render(metrics.registry(store, catalog, clock=clock)).decode()
    for family in text_string_to_metric_families(text):
        exposed = family.name + ("_total" if family.type == "counter" else "")
        assert exposed in metrics.METRICS, exposed
        kind, labels = metrics.METRICS[exposed]
        assert family.type == kind
        for s in family.samples:
            assert set(s.labels) - {"le"} == set(labels), (exposed, s.labels)


def test_scrape_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    """The collector's aggregates give the same samples on a PostgreSQL state store."""
    store, catalog, clock = populate(StateStore(pg_url), tmp_path)
    try:
        s = scrape(metrics.registry(store, catalog, clock=clock))
    finally:
        store.close()
    assert sample(s, "mendflow_runs_total", pipeline="orders", outcome="succeeded") == 2
    assert sample(s, "mendflow_rows_total", pipeline="orders", outcome="quarantined") == 5
    assert sample(s, "mendflow_pipeline_freshness_seconds", pipeline="orders") == 100
    assert sample(s, "mendflow_pipeline_paused", pipeline="drops") == 1
    assert sample(s, "mendflow_breaker_open_seconds", dependency="postgresql://app:***@db/x") == 52
    assert sample(s, "mendflow_time_to_recover_seconds_bucket", le="120.0") == 1
    assert sample(s, "mendflow_time_to_recover_seconds_sum") == 90
    assert sample(s, "mendflow_state_up") == 1


def test_worker_http_server_exposes_batch_durations() -> None:
    """start_http_server serves a registry's metrics over HTTP on 127.0.0.1."""
    import httpx

    timer = metrics.BatchTimer()
    ids: dict[str, Any] = {"run_id": "r", "pipeline": "orders"}
    timer(BatchRead(**ids, at=T0, batch_id="a", rows=1, source="s"))
    timer(BatchSkipped(**ids, at=T0 + 2, batch_id="a", rows=1))
    server, thread = metrics.start_http_server(free_port(), metrics.registry(None, timer=timer))
    try:
        host, port = server.server_address[:2]
        body = httpx.get(f"http://{host}:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert 'mendflow_batch_duration_seconds_count{pipeline="orders"} 1.0' in body
