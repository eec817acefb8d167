"""A transform for the worker tests: it slows each batch down when the environment asks, so a
test can kill a worker in the middle of a run."""

from __future__ import annotations

import os
import time

import pyarrow as pa

#: Seconds each batch sleeps (unset or 0: no wait, as in the fault-free reference run).
DELAY_ENV = "MENDFLOW_TEST_BATCH_DELAY_S"


def slow(table: pa.Table) -> pa.Table:
    """Return ``table`` unchanged, after sleeping ``$MENDFLOW_TEST_BATCH_DELAY_S`` seconds."""
    delay = float(os.environ.get(DELAY_ENV) or 0)
    if delay > 0:
        time.sleep(delay)
    return table


def boom(table: pa.Table) -> pa.Table:
    """Fail every batch, with a connection string in the message (it must be masked)."""
    raise ValueError("cannot reach postgresql://loader:s3cret-pw@db.internal/warehouse")
