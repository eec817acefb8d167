"""Write-audit-publish in a Parquet folder: the two questions the audit asks, answered.

The batch's files are written under temporary names and audited before they are renamed into
place, so a failed blocking check publishes nothing. The checks, the failure and the events are
``mendflow.sinks._audit``'s; this module answers its questions: the history of the pipeline's
committed batches (the checkpoint's manifest), and how many of the batch's keys more than one
row holds among the folder's files and the batch (DuckDB reads only the key columns, but of
every file: ``UniqueKey`` on a large folder costs a scan of its keys per batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from mendflow import _engine
from mendflow._sql import ident
from mendflow.batch import Finding, Load
from mendflow.sinks._audit import report, run_checks
from mendflow.sinks._parquet_state import Slot

__all__ = ["audit", "report"]

_KEYS = "__mf_keys"


def audit(
    load: Load, folder: Path, name: str, data: pa.Table, dead: pa.Table, slot: Slot
) -> list[Finding]:
    """Run the load's checks before its files are published; raise ``CheckFailed`` on a
    blocking failure. ``name`` is the batch's file name in ``folder`` (an older copy of it is
    left out), ``slot`` what the pipeline committed so far."""
    return run_checks(
        load, str(folder), data, dead,
        history=lambda window: [rows for _, rows in slot.batches if rows > 0][-window:],
        duplicate_keys=lambda columns: _duplicate_keys(folder, name, data, columns),
    )


def _duplicate_keys(folder: Path, name: str, data: pa.Table, columns: Sequence[str]) -> int:
    """Keys of the batch held by more than one row of the folder's files and the batch."""
    files = sorted(str(p) for p in folder.glob("*.parquet") if p.name != name)
    key = ", ".join(ident(column) for column in columns)
    rows = f"SELECT {key} FROM {_KEYS}"
    if files:
        rows = f"SELECT {key} FROM read_parquet(?, union_by_name = true) UNION ALL {rows}"
    con = _engine.cursor()
    try:
        con.register(_KEYS, data.select(list(columns)))
        [(count,)] = con.execute(
            f"SELECT count(*) FROM (SELECT {key} FROM ({rows}) WHERE ({key}) IN "
            f"(SELECT {key} FROM {_KEYS}) GROUP BY {key} HAVING count(*) > 1)",
            [files] if files else [],
        ).fetchall()
    finally:
        con.close()
    return int(count)
