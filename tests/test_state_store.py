"""The state store on SQLite and on a real PostgreSQL: versioned migrations (from empty, from
step 1, from before migrations, by four processes at once), queries, a killed connection.
(URL forms and passwords: test_state_secrets.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from mendflow.events import BatchLoaded, RetryScheduled, RunFinished, RunStarted
from mendflow.exceptions import ConfigError
from mendflow.state import StateStore
from mendflow.state._connect import make_engine, state_url
from mendflow.state.migrations import MIGRATIONS, Migration, current_version, migrate
from mendflow.state.schema import metadata, runs

LATEST = MIGRATIONS[-1].version
STARTER = """
import pathlib, sys, time
from mendflow.state.store import StateStore
print("ready", flush=True)
go = pathlib.Path(sys.argv[2])
while not go.exists():
    time.sleep(0.002)
store = StateStore(sys.argv[1])
print(len(store.runs()))
store.close()
"""


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh state store URL: a SQLite file, or a PostgreSQL database (libpq key=value)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'state.db'}"
    return str(request.getfixturevalue("pg_url"))


def record_run(store: StateStore, run_id: str = "r1", *, at: float = 1000.0) -> None:
    """Record a succeeded run of ``orders``: one batch of 10 rows (1 dead letter), one retry."""
    run, name = run_id, "orders"
    store.record(RunStarted(run_id=run, pipeline=name, at=at, write_mode="merge"))
    store.record(BatchLoaded(run_id=run, pipeline=name, at=at + 1, batch_id="b1", rows=10,
                             dead_letters=1, checkpoint={"file": "a.jsonl", "offset": 11}))
    store.record(RetryScheduled(run_id=run, pipeline=name, at=at + 2, dependency="db", attempt=1,
                                delay_s=0.5, error="reset", error_type="DestinationUnavailable"))
    store.record(RunFinished(run_id=run, pipeline=name, at=at + 3, rows_read=11, rows_loaded=10,
                             dead_letters=1, batches=1, skipped=0, duration_s=3.0))


def _steps(url: str) -> list[tuple[int, str]]:
    engine = make_engine(state_url(url))
    try:
        with engine.connect() as con:
            return [(int(v), str(n)) for v, n in con.exec_driver_sql(
                "SELECT version, name FROM mf_schema_migrations ORDER BY version")]
    finally:
        engine.dispose()


def _indexes(store: StateStore, table: str) -> set[str]:
    return {str(i["name"]) for i in sa.inspect(store.engine).get_indexes(table)}


def _insert_run(engine: sa.Engine) -> None:
    with engine.begin() as con:
        con.execute(runs.insert().values(
            run_id="old", pipeline="orders", status="succeeded", write_mode="append",
            started_at=1000.0, rows_read=5, rows_loaded=5, dead_letters=0, batches=1, skipped=0,
            retries=0))


def test_a_new_store_is_migrated_to_the_latest_version(url: str) -> None:
    """Every step runs once, in order, each recorded with its name; step 2's indexes exist."""
    store = StateStore(url)
    assert _steps(url) == [(m.version, m.name) for m in MIGRATIONS]
    assert current_version(store.engine) == LATEST == 3
    assert "ux_mf_jobs_running" in _indexes(store, "mf_jobs")
    assert _indexes(store, "mf_events") == {"ix_mf_events_pipeline_kind_id", "ix_mf_events_run_id"}
    assert "ix_mf_runs_pipeline_started_at" in _indexes(store, "mf_runs")
    assert "ix_mf_runs_pipeline" not in _indexes(store, "mf_runs")
    store.close()
    StateStore(url).close()
    assert len(_steps(url)) == LATEST  # opening again applies nothing


def test_a_store_at_step_1_upgrades_and_keeps_its_rows(url: str) -> None:
    """A store migrated by a mendflow that knew step 1 only gets the later steps and loses
    nothing."""
    engine = make_engine(state_url(url))
    assert migrate(engine, MIGRATIONS[:1]) == 1
    _insert_run(engine)
    assert "ix_mf_events_pipeline" in {
        i["name"] for i in sa.inspect(engine).get_indexes("mf_events")}
    engine.dispose()
    assert not sa.inspect(engine).has_table("mf_jobs")
    store = StateStore(url)
    assert current_version(store.engine) == 3
    assert [r["run_id"] for r in store.runs()] == ["old"]
    assert "ix_mf_events_pipeline_kind_id" in _indexes(store, "mf_events")
    assert "ix_mf_events_pipeline" not in _indexes(store, "mf_events")
    store.close()


def test_a_store_made_before_migrations_upgrades_in_place(tmp_path: Path) -> None:
    """A SQLite store of a mendflow without migrations (tables, no versions) keeps its runs."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = make_engine(state_url(url))
    metadata.create_all(engine)
    _insert_run(engine)
    engine.dispose()
    store = StateStore(url)
    assert _steps(url) == [(m.version, m.name) for m in MIGRATIONS]
    assert [(r["run_id"], r["rows_loaded"]) for r in store.runs()] == [("old", 5)]
    store.close()


def test_a_store_newer_than_this_mendflow_is_refused(url: str) -> None:
    """An unknown schema version means a newer mendflow migrated it: say to upgrade."""
    StateStore(url).close()
    engine = make_engine(state_url(url))
    with engine.begin() as con:
        con.exec_driver_sql(
            "INSERT INTO mf_schema_migrations (version, name, applied_at) VALUES (99, 'x', 0)")
    engine.dispose()
    with pytest.raises(ConfigError, match=r"version 99.*upgrade mendflow"):
        StateStore(url)


def test_a_failed_step_rolls_back_with_its_version(url: str) -> None:
    """A step that fails half-way leaves neither its changes nor its row: it runs again later."""

    def half_done(con: sa.Connection) -> None:
        con.exec_driver_sql("CREATE TABLE mf_half_done (x INTEGER)")
        raise RuntimeError("step failed")

    engine = make_engine(state_url(url))
    with pytest.raises(RuntimeError, match="step failed"):
        migrate(engine, (*MIGRATIONS, Migration(4, "half done", half_done)))
    assert current_version(engine) == 3
    assert not sa.inspect(engine).has_table("mf_half_done")
    engine.dispose()


def test_four_processes_starting_at_once_migrate_once(url: str, tmp_path: Path) -> None:
    """Four real processes open a new store at the same instant: all succeed, each step once."""
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", STARTER, url, str(go)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    go.touch()
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.strip() == "0"
    assert _steps(url) == [(m.version, m.name) for m in MIGRATIONS]


def test_runs_status_and_events_are_recorded_and_queried(url: str) -> None:
    """The run history, per-pipeline status with its checkpoint, and a run's events."""
    store = StateStore(url)
    record_run(store, "r1")
    store.record(RunStarted(run_id="r2", pipeline="orders", at=2000.0, write_mode="merge"))
    store.record(RunStarted(run_id="r3", pipeline="orders", at=3000.0, write_mode="merge"))
    found = store.runs(pipeline="orders")
    assert [(r["run_id"], r["status"]) for r in found] == [
        ("r3", "running"), ("r2", "interrupted"), ("r1", "succeeded")]
    assert (found[2]["rows_loaded"], found[2]["retries"], found[2]["batches"]) == (10, 1, 1)
    assert found[2]["position"] == {"file": "a.jsonl", "offset": 11}
    [status] = store.status()
    assert (status["runs"], status["rows_loaded"], status["dead_letters"]) == (3, 10, 1)
    assert status["last_run"]["run_id"] == "r3"
    assert status["checkpoint"] == {"file": "a.jsonl", "offset": 11}
    assert [e["kind"] for e in store.events("r1")] == [
        "run.started", "batch.loaded", "retry.scheduled", "run.finished"]
    store.close()
