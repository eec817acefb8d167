"""A merge table's primary key, built once its first load is in rather than row by row.

A table the sink creates for a merge gets no primary key at first: ``_mendflow_pending_keys``
notes its key columns and the span ``[lo, hi]`` of the first key column's values loaded so far,
in the load's transaction. While a batch has no NULL key and its key span lies outside
``[lo, hi]``, no row of it can meet a row of the table, so its rows are COPYed straight in and
the span grows. The first batch that could meet a row (or that a check must audit, or any write
that is not such a merge) builds the key first, in its own transaction, and so does ``finish``
at the end of a run: one sorted index build instead of a million index insertions, the usual
way to bulk-load a keyed table. Should a run die, the note stays with the rows it describes and
the next run carries on.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg import sql

__all__ = ["DDL", "Pending", "build", "defer", "pending", "widen"]

TABLE = "_mendflow_pending_keys"
DDL = ("CREATE TABLE IF NOT EXISTS {} (table_name TEXT PRIMARY KEY, keys TEXT NOT NULL, "
       "lo TEXT, hi TEXT)")

#: The key columns of a table whose key is not built yet, and the span of the first one's values
#: (None, None: no rows yet), typed as that column.
Pending = tuple[tuple[str, ...], Any, Any]


def defer(cur: psycopg.Cursor[Any], schema: str, table: str, keys: tuple[str, ...]) -> None:
    """Note that ``table`` (just created, empty) will get its primary key on ``keys`` later."""
    cur.execute(sql.SQL("INSERT INTO {} (table_name, keys) VALUES (%s, %s)").format(
        sql.Identifier(schema, TABLE)), (table, json.dumps(list(keys))))


def pending(
    cur: psycopg.Cursor[Any], schema: str, table: str, pg_types: dict[str, str]
) -> Pending | None:
    """The note of ``table``, its span read back as the key column's type; None: no note."""
    cur.execute(sql.SQL("SELECT keys FROM {} WHERE table_name = %s").format(
        sql.Identifier(schema, TABLE)), (table,))
    row = cur.fetchone()
    if row is None:
        return None
    keys = tuple(json.loads(row[0]))
    kind = sql.SQL(pg_types[keys[0]])
    cur.execute(sql.SQL("SELECT lo::{0}, hi::{0} FROM {1} WHERE table_name = %s").format(
        kind, sql.Identifier(schema, TABLE)), (table,))
    span = cur.fetchone()
    return keys, *(span or (None, None))


def widen(cur: psycopg.Cursor[Any], schema: str, table: str, low: Any, high: Any) -> None:
    """Set the noted span to ``[low, high]`` (stored as PostgreSQL's text of each value, which
    ``pending`` reads back as the column's type)."""
    cur.execute(sql.SQL("UPDATE {} SET lo = %s::text, hi = %s::text WHERE table_name = %s")
                .format(sql.Identifier(schema, TABLE)), (low, high, table))


def build(cur: psycopg.Cursor[Any], schema: str, table: str) -> None:
    """Build the noted primary key of ``table`` (if any) and drop the note."""
    cur.execute(sql.SQL("DELETE FROM {} WHERE table_name = %s RETURNING keys").format(
        sql.Identifier(schema, TABLE)), (table,))
    row = cur.fetchone()
    if row is None:
        return
    keys = json.loads(row[0])
    cur.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
        sql.Identifier(schema, table), sql.SQL(", ").join(map(sql.Identifier, keys))))
