"""Write-audit-publish in a SQLite destination: the two queries the audit asks of the file.

``audit`` runs inside the load transaction once the rows and dead letters are in; the checks,
the failure and the events are ``mendflow.sinks._audit``'s, this module only answers its
questions: the history of the pipeline's committed batches (``_mendflow_batches``, in commit
order ``n``), and how many of the batch's keys more than one row of the table holds (the keys
in a temporary table, semi-joined, so only they are grouped however large the table).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import pyarrow as pa

from mendflow._sql import ident
from mendflow.batch import Finding, Load
from mendflow.sinks import _sqlite_rows as _rows
from mendflow.sinks._audit import report, run_checks

__all__ = ["audit", "report"]


def audit(
    con: sqlite3.Connection, target: str, load: Load, rows: pa.Table, stored: pa.Table,
    dead: pa.Table,
) -> list[Finding]:
    """Run the load's checks inside its transaction; raise ``CheckFailed`` on a blocking one.

    ``rows`` are the batch's rows as read, ``stored`` the same as SQLite holds them (the keys
    are looked up in those)."""
    return run_checks(
        load, target, rows, dead,
        history=lambda window: _history(con, load.pipeline, window),
        duplicate_keys=lambda columns: _duplicate_keys(con, target, stored, columns),
    )


def _history(con: sqlite3.Connection, pipeline: str, window: int) -> tuple[int, ...]:
    """Rows of the pipeline's newest ``window`` committed batches that loaded any, oldest
    first. Replays (ids ``replay:...``) are not the source's volume: left out."""
    rows = con.execute(
        "SELECT rows FROM (SELECT rows, n FROM _mendflow_batches WHERE pipeline = ? "
        "AND rows > 0 AND substr(batch_id, 1, 7) <> 'replay:' ORDER BY n DESC LIMIT ?) "
        "ORDER BY n",
        [pipeline, window],
    ).fetchall()
    return tuple(int(row[0]) for row in rows)


def _duplicate_keys(
    con: sqlite3.Connection, target: str, stored: pa.Table, columns: Sequence[str]
) -> int:
    """Keys of the batch held by more than one row of ``target``."""
    key = ", ".join(ident(column) for column in columns)
    keys = _rows.keys_table(con, stored, columns)
    row = con.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM {ident(target)} "
        f"WHERE ({key}) IN (SELECT {key} FROM {keys}) GROUP BY {key} HAVING count(*) > 1)"
    ).fetchone()
    return int(row[0]) if row else 0
