"""The dead-letter store in a SQLite destination, written in each load's own transaction.

The same table, rules and store as every SQL destination's (``mendflow.sinks._dlq``; see
``_duckdb_dlq`` for the semantics): a run's load inserts its dead letters (attempt 1), a
replay's load settles them in the transaction that loads the rows. This module holds SQLite's
table and its rendering of the shared queries. Ids come from ``AUTOINCREMENT``, so an id is never
reused after a purge (a replay's batch id derives from ids). ``first_seen`` and ``last_seen``
are epoch seconds (REAL; for the shared queries the sink defines ``now()`` and
``to_timestamp()`` on its connection in those terms), ``checks`` is a JSON list, ``record``
the original bytes. The load's dead letters are bound with ``executemany`` (see
``_sqlite_rows``), one time for all; a replay's are held in two temporary tables for the
settlement's joins.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any

import pyarrow as pa

from mendflow.batch import Load
from mendflow.sinks._dlq import DELETE_LOADED, TABLE, SqlDeadLetters, settlement
from mendflow.sinks._sqlite_errors import translate
from mendflow.sinks._sqlite_rows import CHUNK

__all__ = ["DDL", "SQLiteDeadLetters", "add"]

_IDS, _AGAIN = "_mendflow_replay_ids", "_mendflow_replay_dead"  # temp tables
_FIELDS = ("row_index", "stage", "reason", "checks", "record", "format")

DDL: tuple[str, ...] = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "pipeline TEXT NOT NULL, run_id TEXT NOT NULL, batch_id TEXT NOT NULL, "
    "row_index INTEGER NOT NULL, stage TEXT NOT NULL, reason TEXT NOT NULL, checks TEXT, "
    "record BLOB, format TEXT NOT NULL, attempts INTEGER NOT NULL, first_seen REAL NOT NULL, "
    "last_seen REAL NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS _mendflow_dead_letters_by_pipeline ON {TABLE} (pipeline, id)",
)


def add(con: sqlite3.Connection, load: Load, dead: pa.Table) -> None:
    """Insert the load's dead letters (attempt 1), or for a replay settle the replayed ones."""
    if load.replay_ids:
        _settle(con, load, dead)
    elif dead.num_rows:
        _insert(con, load, dead)


def _insert(con: sqlite3.Connection, load: Load, dead: pa.Table) -> None:
    sql = (
        f"INSERT INTO {TABLE} (pipeline, run_id, batch_id, row_index, stage, reason, checks, "
        "record, format, attempts, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, "
        "?, ?)"
    )
    now = time.time()  # one time for the load, as now() in DuckDB's and PostgreSQL's
    for chunk in dead.select(list(_FIELDS)).to_batches(max_chunksize=CHUNK):
        fields = [column.to_pylist() for column in chunk.columns]
        constant = (load.pipeline, load.run_id, load.batch_id)
        con.executemany(sql, zip(*map(repeat, constant), *fields, repeat(now), repeat(now),
                                 strict=False))


def _settle(con: sqlite3.Connection, load: Load, dead: pa.Table) -> None:
    """Update the replayed records that failed again, delete the others (loaded now)."""
    new, again, ids = settlement(load, dead)
    if new.num_rows:
        _insert(con, load, new)
    for statement in _TEMP:
        con.execute(statement)
    con.executemany(f"INSERT INTO temp.{_IDS} VALUES (?, ?)",
                    zip(ids["pos"].to_pylist(), ids["id"].to_pylist(), strict=True))
    failed = [again[name].to_pylist() for name in _FIELDS[:4]]
    con.executemany(f"INSERT INTO temp.{_AGAIN} VALUES (?, ?, ?, ?)", zip(*failed, strict=True))
    con.execute(_UPDATE_FAILED, [time.time(), load.pipeline])
    con.execute(_render(DELETE_LOADED), [load.pipeline])


#: The replay's ids by position and its records that failed again, for the transaction.
_TEMP = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_IDS} (pos INTEGER PRIMARY KEY, id INTEGER NOT NULL)",
    f"CREATE TEMP TABLE IF NOT EXISTS {_AGAIN} (row_index INTEGER NOT NULL, stage TEXT, "
    "reason TEXT, checks TEXT)",
    f"DELETE FROM temp.{_IDS}",
    f"DELETE FROM temp.{_AGAIN}",
)
#: ``_dlq.UPDATE_FAILED`` without ``DISTINCT ON``: one failure per record by ``GROUP BY``.
_UPDATE_FAILED = (
    f"UPDATE {TABLE} AS d SET attempts = d.attempts + 1, last_seen = ?, stage = f.stage, "
    "reason = f.reason, checks = f.checks FROM (SELECT i.id, x.stage, x.reason, x.checks "
    f"FROM temp.{_AGAIN} x JOIN temp.{_IDS} i ON i.pos = x.row_index GROUP BY x.row_index) f "
    "WHERE d.id = f.id AND d.pipeline = ?"
)


class SQLiteDeadLetters(SqlDeadLetters):
    """The dead letters of a SQLite destination (``DeadLetterStore``), through the sink's
    connection (``connect``, which defines ``now()`` and ``to_timestamp()`` on it: epoch
    seconds); ``name`` is the destination's, for errors."""

    CHECK = (
        "CASE WHEN json_valid(checks) THEN EXISTS (SELECT 1 FROM json_each(checks) "
        "WHERE json_extract(value, '$.check') = {p}) ELSE 0 END"
    )

    def __init__(self, connect: Callable[[], sqlite3.Connection], *, name: str) -> None:
        self._connect = connect
        self._name = name

    def _fetch(self, template: str, params: Sequence[Any], doing: str
               ) -> list[tuple[Any, ...]]:
        values = [json.dumps(v) if isinstance(v, list) else v for v in params]
        try:
            return self._connect().execute(_render(template), values).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc, doing, dependency=self._name) from exc


#: The shared templates' spellings SQLite lacks: times are epoch seconds already, and a list of
#: ids is bound as a JSON array.
_SPELLINGS = (
    ("extract(epoch FROM ", "("),
    ("= ANY(CAST({p} AS BIGINT[]))", "IN (SELECT value FROM json_each({p}))"),
)


def _render(template: str) -> str:
    for theirs, ours in _SPELLINGS:
        template = template.replace(theirs, ours)
    return template.format(table=TABLE, dead=f"temp.{_AGAIN}", ids=f"temp.{_IDS}", p="?")
