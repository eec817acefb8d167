"""SIGKILL a real process loading 120,000 rows at many points; a rerun must converge exactly.

Into DuckDB with the state in SQLite (both write modes), into DuckDB with the state in PostgreSQL,
and into PostgreSQL with the state in the same PostgreSQL database (merge mode).
"""

from __future__ import annotations

import functools
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mendflow.state import StateStore
from tests import _pg_hash
from tests._pg import fresh_database
from tests.conftest import dead_letter_hash, table_hash, write_orders, write_pipeline

CHILD = Path(__file__).with_name("crash_child.py")
Outcome = tuple[tuple[int, str], tuple[int, str]]
#: (write mode, the destination's hashes after a fault-free run, that run's wall seconds)
Reference = tuple[str, Outcome, float]
ROWS_PER_FILE = 40_000
BATCH = 8_000  # 5 batches a file, 15 in all
#: The PostgreSQL destination's runs load a fifth of that in as many batches (the suite's time).
PG_ROWS_PER_FILE, PG_BATCH = 8_000, 1_600
STAGES = ("batch.read", "batch.transformed", "batch.staged", "batch.loaded")
NTHS = (1, 5, 6, 11, 15)  # first batch, a file's last, the next file's first, mid, the very last
POINTS = [(stage, nth) for stage in STAGES for nth in NTHS]
#: DuckDB with the state in PostgreSQL: a file's first batch at each stage (the PostgreSQL
#: destination's runs put their state in PostgreSQL too, at every point).
STATE_POINTS = [(stage, 6) for stage in STAGES]


def _write_drops(folder: Path, rows: int) -> Path:
    """Three files of ``rows`` orders; the third repeats ids of the first (updates for merge)."""
    folder.mkdir()
    write_orders(folder / "a.jsonl", start=1, count=rows, seed=1, bad_every=501)
    write_orders(folder / "b.jsonl", start=rows + 1, count=rows, seed=2)
    write_orders(folder / "c.jsonl", start=0, count=rows, seed=3, repeat_from=100)
    return folder


def _merged_rows(rows: int) -> int:
    """Rows in the table after a merge of the three files: files a and b have distinct ids;
    file c only updates ids 100..5099 of file a (re-adding the malformed ones)."""
    return 2 * rows - rows // 501 + sum(1 for i in range(100, 5100) if i % 501 == 500)


@pytest.fixture(scope="module")
def drops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three files of 40,000 orders."""
    return _write_drops(tmp_path_factory.mktemp("crash") / "drops", ROWS_PER_FILE)


@pytest.fixture(scope="module")
def small_drops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three files of 8,000 orders, for the PostgreSQL destination."""
    return _write_drops(tmp_path_factory.mktemp("crash-pg") / "drops", PG_ROWS_PER_FILE)


def _pipeline(folder: Path, drops: Path, mode: str, *, pg: str = "") -> Path:
    """The pipeline YAML: into ``folder``'s DuckDB file, or into the PostgreSQL database ``pg``
    (then in batches of PG_BATCH)."""
    destination: dict[str, Any] = {"type": "duckdb", "path": str(folder / "dest.duckdb")}
    if pg:
        destination = {"type": "postgres", "url": pg}
    spec: dict[str, object] = {
        "name": f"crash_{mode}",
        "source": {"type": "files", "path": str(drops / "*.jsonl"),
                   "batch_size": PG_BATCH if pg else BATCH},
        "destination": destination | {"table": "orders"},
        "write_mode": mode,
        "columns": {"amount": "double", "updated_at": "timestamptz"},
    }
    if mode == "merge":
        spec["primary_key"] = ["id"]
    return write_pipeline(folder / "pipeline.yaml", **spec)


def _child(pipeline: Path, *kill: str, state: str = "") -> subprocess.CompletedProcess[str]:
    """Run the pipeline in a new process (state in a SQLite file by it, unless ``state``)."""
    state = state or f"sqlite:///{pipeline.parent / 'state.db'}"
    return subprocess.run(
        [sys.executable, str(CHILD), str(pipeline), state, *kill],
        capture_output=True, text=True, timeout=300, check=False,
    )


def _outcome(folder: Path) -> Outcome:
    db = folder / "dest.duckdb"
    return table_hash(db, "orders"), dead_letter_hash(db)


def _pg_outcome(url: str) -> Outcome:
    return _pg_hash.table_hash(url, "orders"), _pg_hash.dead_letter_hash(url)


@pytest.fixture(scope="module")
def fault_free(drops: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Reference]:
    """The DuckDB destination after a fault-free run of a write mode (each mode run once)."""

    @functools.cache
    def run(mode: str) -> Reference:
        folder = tmp_path_factory.mktemp(f"ref-{mode}")
        started = time.monotonic()
        done = _child(_pipeline(folder, drops, mode))
        assert done.returncode == 0, done.stderr
        return mode, _outcome(folder), time.monotonic() - started

    return run


@pytest.fixture(scope="module", params=["merge", "append"])
def reference(request: pytest.FixtureRequest, fault_free: Callable[[str], Reference]) -> Reference:
    """The destination after a fault-free run, per write mode."""
    return fault_free(request.param)


@pytest.fixture(scope="module")
def pg_reference(small_drops: Path, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """A PostgreSQL destination (state in the same database) after a fault-free merge run."""
    with fresh_database() as url:
        folder = tmp_path_factory.mktemp("ref-pg")
        done = _child(_pipeline(folder, small_drops, "merge", pg=url), state=url)
        assert done.returncode == 0, done.stderr
        return _pg_outcome(url)


def test_reference_run_accounts_for_every_row(
    reference: Reference,
) -> None:
    """The fault-free run puts all 120,000 rows in the table or the dead letters."""
    mode, ((rows, _), (dead, _)), _ = reference
    bad = ROWS_PER_FILE // 501  # the malformed amounts of file a
    assert dead == bad
    if mode == "append":
        assert rows + dead == 3 * ROWS_PER_FILE
    else:
        assert rows == _merged_rows(ROWS_PER_FILE)


def test_the_postgres_reference_run_accounts_for_every_row(pg_reference: Outcome) -> None:
    """The fault-free merge into PostgreSQL holds every id once and each malformed row as a
    dead letter."""
    (rows, _), (dead, _) = pg_reference
    assert (rows, dead) == (_merged_rows(PG_ROWS_PER_FILE), PG_ROWS_PER_FILE // 501)


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "nth"), POINTS, ids=[f"{s}#{n}" for s, n in POINTS])
def test_kill_then_rerun_matches_fault_free_run(
    reference: Reference,
    drops: Path,
    tmp_path: Path,
    stage: str,
    nth: int,
) -> None:
    """A SIGKILL at any stage of any batch, then a rerun, leaves exactly the fault-free rows."""
    mode, expected, _ = reference
    pipeline = _pipeline(tmp_path, drops, mode)
    killed = _child(pipeline, stage, str(nth))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    rerun = _child(pipeline)
    assert rerun.returncode == 0, rerun.stderr
    assert _outcome(tmp_path) == expected


@pytest.mark.slow
def test_kills_at_random_moments_then_rerun_matches(
    reference: Reference, drops: Path, tmp_path: Path
) -> None:
    """SIGKILLs in a row at random moments (mid-parse, mid-write, mid-commit) converge."""
    mode, expected, seconds = reference
    pipeline = _pipeline(tmp_path, drops, mode)
    rng = random.Random(mode)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    kills, scale = 0, 1.0
    for round_ in range(12):
        if kills == 4:
            break
        proc = subprocess.Popen([sys.executable, str(CHILD), str(pipeline), state])
        # Start-up takes about the first half; each kill leaves the next run less to do.
        low, high = (0.4, 0.9) if round_ == 0 or kills == 0 else (0.3, 0.6)
        time.sleep(rng.uniform(low, high) * seconds * scale)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        elif kills < 2:  # it finished before the kill: check it, then start over, aim sooner
            proc.wait(timeout=60)
            assert _outcome(tmp_path) == expected
            kills = 0
            (tmp_path / "dest.duckdb").unlink(missing_ok=True)
            (tmp_path / "dest.duckdb.wal").unlink(missing_ok=True)
            (tmp_path / "state.db").unlink(missing_ok=True)
            scale *= 0.7
        proc.wait(timeout=60)
    rerun = _child(pipeline)
    assert rerun.returncode == 0, rerun.stderr
    assert _outcome(tmp_path) == expected
    assert kills >= 2


def _statuses(state: str) -> list[str]:
    store = StateStore(state)
    try:
        return [run["status"] for run in store.runs()]
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "nth"), STATE_POINTS, ids=[f"{s}#{n}" for s, n in STATE_POINTS])
def test_kill_with_the_state_in_postgres_then_rerun_matches(
    fault_free: Callable[[str], Reference], drops: Path, tmp_path: Path, stage: str, nth: int
) -> None:
    """With the state store in PostgreSQL, a SIGKILL then a rerun leaves the fault-free rows, and
    the store shows the killed run interrupted and the rerun succeeded."""
    _, expected, _ = fault_free("merge")
    pipeline = _pipeline(tmp_path, drops, "merge")
    with fresh_database() as state:
        killed = _child(pipeline, stage, str(nth), state=state)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        rerun = _child(pipeline, state=state)
        assert rerun.returncode == 0, rerun.stderr
        assert _statuses(state) == ["succeeded", "interrupted"]
    assert _outcome(tmp_path) == expected


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "nth"), POINTS, ids=[f"{s}#{n}" for s, n in POINTS])
def test_kill_loading_into_postgres_then_rerun_matches(
    pg_reference: Outcome, small_drops: Path, tmp_path: Path, stage: str, nth: int
) -> None:
    """PostgreSQL as destination and state store: a SIGKILL at any stage (mid-COPY, before
    COMMIT), then a rerun, leaves the rows and dead letters of the fault-free run."""
    with fresh_database() as url:
        pipeline = _pipeline(tmp_path, small_drops, "merge", pg=url)
        killed = _child(pipeline, stage, str(nth), state=url)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        rerun = _child(pipeline, state=url)
        assert rerun.returncode == 0, rerun.stderr
        assert _pg_outcome(url) == pg_reference
        assert _statuses(url) == ["succeeded", "interrupted"]
        with psycopg.connect(url) as con:
            batches = con.execute(
                "SELECT count(*), count(DISTINCT batch_id) FROM _mendflow_batches").fetchone()
        assert batches == (15, 15)  # each batch committed once, by one of the two runs

