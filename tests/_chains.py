"""Chains of SIGKILLs for the crash tests of the SQLite and Parquet destinations.

Each chain's runs are killed at their points in turn (a chain's event counts start again in each
run), then a run finishes; the destination must then equal a fault-free run's. The drops are
three files of 3,000 orders in batches of 1,000 (nine batches, so every kill is reached); the
third file repeats ids of the first (updates for merge).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import write_orders

CHILD = Path(__file__).with_name("crash_child.py")

#: Kill points per chain: inside the write (batch.staged), right after it, reading, transforming.
CHAINS = [
    [("batch.staged", 1), ("batch.loaded", 1), ("batch.read", 2), ("batch.transformed", 3)],
    [("batch.staged", 3), ("batch.loaded", 3), ("batch.staged", 2), ("batch.read", 1)],
    [("batch.loaded", 2), ("batch.transformed", 1), ("batch.staged", 4), ("batch.loaded", 4)],
]
#: Replace mode: kills before and after the last batch, before ``finish`` publishes.
REPLACE_CHAINS = [
    [("batch.staged", 2), ("batch.loaded", 3), ("batch.read", 2), ("batch.loaded", 4)],
]


def write_drops(folder: Path) -> Path:
    """The three files in ``folder`` (created); nine malformed amounts in the first."""
    folder.mkdir()
    write_orders(folder / "a.jsonl", start=1, count=3000, seed=1, bad_every=301)
    write_orders(folder / "b.jsonl", start=3001, count=3000, seed=2)
    write_orders(folder / "c.jsonl", start=0, count=3000, seed=3, repeat_from=100)
    return folder


def run_child(pipeline: Path, *kill: object) -> int:
    """Run ``pipeline`` in a real process (state beside it), killed at ``kill`` if given;
    its exit code, which must be 0 or SIGKILL's."""
    state = f"sqlite:///{pipeline.parent / 'state.db'}"
    done = subprocess.run(
        [sys.executable, str(CHILD), str(pipeline), state, *map(str, kill)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.returncode
