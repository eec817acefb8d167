"""Write-audit-publish in a DuckDB destination: the two queries the audit asks of the file.

``audit`` runs inside the load transaction once the rows and dead letters are in; the checks,
the failure and the events are ``mendflow.sinks._audit``'s, this module only answers its
questions: the history of the pipeline's committed batches, and the batch's keys looked up in
the table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import duckdb
import pyarrow as pa

from mendflow._sql import ident
from mendflow.batch import Finding, Load
from mendflow.sinks._audit import report, run_checks

__all__ = ["audit", "report"]

_AUDIT = "__mf_audit"


def audit(
    con: duckdb.DuckDBPyConnection, target: str, load: Load, data: pa.Table, dead: pa.Table
) -> list[Finding]:
    """Run the load's checks inside its transaction; raise ``CheckFailed`` on a blocking one."""
    return run_checks(
        load, target, data, dead,
        history=lambda window: _history(con, load.pipeline, window),
        duplicate_keys=lambda columns: _duplicate_keys(con, target, data, columns),
    )


def _history(con: duckdb.DuckDBPyConnection, pipeline: str, window: int) -> tuple[int, ...]:
    """Rows of the pipeline's newest ``window`` committed batches that loaded any, oldest first
    (a quarantined batch loaded none; the batch being audited is not committed yet). Replays
    (ids ``replay:...``, see ``mendflow._replay``) are not the source's volume: left out."""
    rows = con.execute(
        "SELECT rows FROM (SELECT rows, committed_at, rowid AS n FROM _mendflow_batches "
        "WHERE pipeline = ? AND rows > 0 AND NOT starts_with(batch_id, 'replay:') "
        "ORDER BY committed_at DESC, n DESC LIMIT ?) ORDER BY committed_at, n",
        [pipeline, window],
    ).fetchall()
    return tuple(int(row[0]) for row in rows)


def _duplicate_keys(
    con: duckdb.DuckDBPyConnection, target: str, data: pa.Table, columns: Sequence[str]
) -> int:
    """Keys of the batch held by more than one row of ``target``: a semi-join on the batch's
    keys, so only those are grouped, however large the table."""
    key = ", ".join(ident(column) for column in columns)
    con.register(_AUDIT, data.select(list(columns)))
    try:
        [(count,)] = con.execute(  # fetch all: an unfinished result blocks the unregister
            f"SELECT count(*) FROM (SELECT 1 FROM {ident(target)} "
            f"WHERE ({key}) IN (SELECT {key} FROM {_AUDIT}) GROUP BY {key} HAVING count(*) > 1)"
        ).fetchall()
    finally:
        with contextlib.suppress(duckdb.TransactionException):  # see duckdb._unregister
            con.unregister(_AUDIT)
    return int(count)
