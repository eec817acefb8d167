"""Write-audit-publish in a PostgreSQL destination: the two queries the audit asks of it.

``audit`` runs inside the load transaction once the rows and dead letters are in; the checks,
the failure and the events are ``mendflow.sinks._audit``'s, this module only answers its
questions: the history of the pipeline's committed batches (``_mendflow_batches``), and how
many of the batch's keys more than one row of the table holds. The batch's rows are in the
temporary staging table ``stage`` of the same transaction, so the keys never travel again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from mendflow.batch import Finding, Load
from mendflow.sinks._audit import report, run_checks
from mendflow.sinks._pg_schema import columns_of

__all__ = ["audit", "report"]

_BATCHES = "_mendflow_batches"


def audit(
    cur: psycopg.Cursor[Any], schema: str, target: str, stage: str, load: Load,
    data: pa.Table, dead: pa.Table,
) -> list[Finding]:
    """Run the load's checks inside its transaction; raise ``CheckFailed`` on a blocking one.

    ``target`` is the table in ``schema`` the rows went into, ``stage`` the temporary table
    that holds the batch's rows."""
    return run_checks(
        load, target, data, dead,
        history=lambda window: _history(cur, schema, load.pipeline, window),
        duplicate_keys=lambda columns: _duplicate_keys(cur, schema, target, stage, columns),
    )


def _history(
    cur: psycopg.Cursor[Any], schema: str, pipeline: str, window: int
) -> tuple[int, ...]:
    """Rows of the pipeline's newest ``window`` committed batches that loaded any, oldest first
    (in commit order, ``n``). Replays (ids ``replay:...``) are not the source's volume."""
    cur.execute(
        sql.SQL(
            "SELECT rows FROM (SELECT rows, n FROM {} WHERE pipeline = %s AND rows > 0 "
            "AND NOT starts_with(batch_id, 'replay:') ORDER BY n DESC LIMIT %s) h ORDER BY n"
        ).format(sql.Identifier(schema, _BATCHES)),
        (pipeline, window),
    )
    return tuple(int(row[0]) for row in cur.fetchall())


def _duplicate_keys(
    cur: psycopg.Cursor[Any], schema: str, target: str, stage: str, columns: Sequence[str]
) -> int:
    """Keys of the batch held by more than one row of ``target``: a semi-join on the staged
    keys (cast to the table's types), so only those are grouped, however large the table."""
    types = columns_of(cur, schema, target).pg
    key = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    staged = sql.SQL(", ").join(
        sql.SQL("CAST({} AS {})").format(sql.Identifier(c), sql.SQL(types[c]))  # catalog's
        if c in types else sql.Identifier(c)
        for c in columns
    )
    cur.execute(
        sql.SQL(
            "SELECT count(*) FROM (SELECT 1 FROM {} WHERE ({}) IN (SELECT {} FROM {}) "
            "GROUP BY {} HAVING count(*) > 1) d"
        ).format(sql.Identifier(schema, target), key, staged, sql.Identifier(stage), key),
    )
    row = cur.fetchone()
    return int(row[0]) if row else 0
