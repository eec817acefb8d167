"""SIGKILL a real process loading 120,000 rows at many points; a rerun must converge exactly."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import dead_letter_hash, table_hash, write_orders, write_pipeline

CHILD = Path(__file__).with_name("crash_child.py")
Outcome = tuple[tuple[int, str], tuple[int, str]]
#: (write mode, the destination's hashes after a fault-free run, that run's wall seconds)
Reference = tuple[str, Outcome, float]
ROWS_PER_FILE = 40_000
BATCH = 8_000  # 5 batches a file, 15 in all
STAGES = ("batch.read", "batch.transformed", "batch.staged", "batch.loaded")
NTHS = (1, 5, 6, 11, 15)  # first batch, a file's last, the next file's first, mid, the very last
POINTS = [(stage, nth) for stage in STAGES for nth in NTHS]


@pytest.fixture(scope="module")
def drops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three files of 40,000 orders; the third repeats ids of the first (updates for merge)."""
    folder = tmp_path_factory.mktemp("crash") / "drops"
    folder.mkdir()
    write_orders(folder / "a.jsonl", start=1, count=ROWS_PER_FILE, seed=1, bad_every=501)
    write_orders(folder / "b.jsonl", start=ROWS_PER_FILE + 1, count=ROWS_PER_FILE, seed=2)
    write_orders(folder / "c.jsonl", start=0, count=ROWS_PER_FILE, seed=3, repeat_from=100)
    return folder


def _pipeline(folder: Path, drops: Path, mode: str) -> Path:
    spec: dict[str, object] = {
        "name": f"crash_{mode}",
        "source": {"type": "files", "path": str(drops / "*.jsonl"), "batch_size": BATCH},
        "destination": {"type": "duckdb", "path": str(folder / "dest.duckdb"), "table": "orders"},
        "write_mode": mode,
        "columns": {"amount": "double", "updated_at": "timestamptz"},
    }
    if mode == "merge":
        spec["primary_key"] = ["id"]
    return write_pipeline(folder / "pipeline.yaml", **spec)


def _child(pipeline: Path, *kill: str) -> subprocess.CompletedProcess[str]:
    state = f"sqlite:///{pipeline.parent / 'state.db'}"
    return subprocess.run(
        [sys.executable, str(CHILD), str(pipeline), state, *kill],
        capture_output=True, text=True, timeout=300, check=False,
    )


def _outcome(folder: Path) -> Outcome:
    db = folder / "dest.duckdb"
    return table_hash(db, "orders"), dead_letter_hash(db)


@pytest.fixture(scope="module", params=["merge", "append"])
def reference(
    request: pytest.FixtureRequest, drops: Path, tmp_path_factory: pytest.TempPathFactory
) -> Reference:
    """The destination after a fault-free run, per write mode."""
    mode: str = request.param
    folder = tmp_path_factory.mktemp(f"ref-{mode}")
    started = time.monotonic()
    done = _child(_pipeline(folder, drops, mode))
    assert done.returncode == 0, done.stderr
    return mode, _outcome(folder), time.monotonic() - started


def test_reference_run_accounts_for_every_row(
    reference: Reference,
) -> None:
    """The fault-free run puts all 120,000 rows in the table or the dead letters."""
    mode, ((rows, _), (dead, _)), _ = reference
    bad = ROWS_PER_FILE // 501  # the malformed amounts of file a
    assert dead == bad
    if mode == "append":
        assert rows + dead == 3 * ROWS_PER_FILE
    else:  # files a and b have distinct ids; file c only updates ids 100..5099 of file a
        assert rows == 2 * ROWS_PER_FILE - bad + sum(1 for i in range(100, 5100) if i % 501 == 500)


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
