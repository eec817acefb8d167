"""Arrow columns as SQLite values, and their way into a table in chunks.

SQLite has four storage classes; a table made by the sink declares one per column (its
*affinity*) and every value is converted, column by column in Arrow, before it is bound:

====================================  ========  =============================================
Arrow type                            column    value
====================================  ========  =============================================
integers, booleans                    INTEGER   the integer (booleans 0 and 1)
durations                             INTEGER   microseconds
floats                                REAL      the float (NaN is stored as NULL by SQLite)
strings                               TEXT      the text
timestamps                            TEXT      ISO 8601, ``2026-01-02T03:04:05.000000``;
                                                with a time zone, in UTC with ``Z``
dates, times                          TEXT      ISO 8601, ``2026-01-02``, ``03:04:05.000000``
decimals                              TEXT      the exact decimal, ``12.50`` (never a float)
lists, structs, maps                  TEXT      JSON (SQLite's ``json_extract`` reads it)
binary                                BLOB      the bytes
all-null column                       (none)    not created until a batch brings a value
====================================  ========  =============================================

SQLite's date functions read the timestamp text as it is, and ISO 8601 text in one time zone
sorts in time order.

``insert`` binds the converted columns with ``executemany``, in chunks. This is the one place
mendflow iterates rows in Python: SQLite has no bulk-load API (no COPY, no Arrow scan), so every
value must cross the driver's C binding one by one. The rows are zipped from whole columns
converted to Python values in one call per column and chunk (never a dict per row), and the
iteration itself runs inside ``executemany``'s C loop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from mendflow import _engine
from mendflow._sql import ident
from mendflow.contracts.schema import Column

__all__ = ["CHUNK", "KEYS", "affinity", "insert", "keys_table", "merge", "stored"]

#: Rows bound per ``executemany`` call: enough to amortise the call, little memory per chunk.
CHUNK = 20_000
#: The temporary table that holds a batch's keys for a semi-join (merge, the audit).
KEYS = "_mendflow_keys"


def affinity(kind: pa.DataType) -> str | None:
    """The affinity of the column made for Arrow type ``kind`` (None: all-null, no column)."""
    if pa.types.is_dictionary(kind):
        return affinity(kind.value_type)
    if pa.types.is_null(kind):
        return None
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_duration(kind):
        return "INTEGER"
    if pa.types.is_floating(kind):
        return "REAL"
    if _is_binary(kind):
        return "BLOB"
    return "TEXT"


def stored(data: pa.Table) -> pa.Table:
    """``data`` with every column converted to the values SQLite stores (see the table above)."""
    columns = [_stored(column) for column in data.columns]
    return pa.Table.from_arrays(columns, names=data.column_names)


def insert(
    con: sqlite3.Connection,
    target: str,
    data: pa.Table,
    *,
    keys: Sequence[str] = (),
    others: Sequence[str] = (),
) -> None:
    """Insert ``data`` (already ``stored``) into ``target``; with ``keys``, upsert on them
    (``ON CONFLICT``: the table needs a unique constraint on exactly those columns), setting the
    table's other columns (``others``) to the batch's values, NULL where the batch has none."""
    names = data.column_names
    sql = (
        f"INSERT INTO {ident(target)} ({', '.join(ident(n) for n in names)}) "
        f"VALUES ({', '.join('?' for _ in names)})"
    )
    if keys:
        update = ", ".join(f"{ident(c)} = excluded.{ident(c)}" for c in others)
        conflict = ", ".join(ident(k) for k in keys)
        action = f"DO UPDATE SET {update}" if update else "DO NOTHING"
        sql += f" ON CONFLICT ({conflict}) {action}"
    for chunk in data.to_batches(max_chunksize=CHUNK):
        values = [column.to_pylist() for column in chunk.columns]
        con.executemany(sql, zip(*values, strict=True))


def merge(
    con: sqlite3.Connection,
    target: str,
    data: pa.Table,
    keys: Sequence[str],
    columns: Sequence[Column],
) -> None:
    """Upsert ``data`` (already ``stored``) on ``keys``: ``ON CONFLICT`` when the table has a
    unique constraint on them (the sink makes one), else delete the batch's keys, then insert."""
    if _unique_on(con, target, keys):
        others = [c.name for c in columns if c.name not in keys]
        insert(con, target, data, keys=keys, others=others)
        return
    key = ", ".join(ident(k) for k in keys)
    held = keys_table(con, data, keys)
    con.execute(f"DELETE FROM {ident(target)} WHERE ({key}) IN (SELECT {key} FROM {held})")
    insert(con, target, data)


def _unique_on(con: sqlite3.Connection, table: str, keys: Sequence[str]) -> bool:
    """Whether ``table`` has a primary key or unique index on exactly ``keys``."""
    want = set(keys)
    primary = {r[0] for r in con.execute(
        "SELECT name FROM pragma_table_info(?) WHERE pk > 0", [table]).fetchall()}
    if primary == want:
        return True
    indexes = con.execute(
        'SELECT name FROM pragma_index_list(?) WHERE "unique" = 1', [table]).fetchall()
    return any(
        {r[0] for r in con.execute("SELECT name FROM pragma_index_info(?)", [index])} == want
        for (index,) in indexes
    )


def _stored(column: pa.ChunkedArray) -> pa.ChunkedArray:
    kind = column.type
    if pa.types.is_dictionary(kind):
        return _stored(column.cast(kind.value_type))
    if pa.types.is_boolean(kind) or (pa.types.is_integer(kind) and kind != pa.uint64()):
        return column.cast(pa.int64())
    if pa.types.is_duration(kind):
        return column.cast(pa.duration("us")).cast(pa.int64())
    if pa.types.is_floating(kind):
        return column.cast(pa.float64())
    if pa.types.is_timestamp(kind):
        if kind.tz is not None:
            column = column.cast(pa.timestamp(kind.unit, tz="UTC"))
        text = column.cast(pa.string())
        return pc.replace_substring(text, " ", "T", max_replacements=1)
    if _is_binary(kind):
        return column.cast(pa.binary())
    if pa.types.is_nested(kind):
        return _json(column)
    if pa.types.is_null(kind) or kind == pa.uint64() or pa.types.is_string(kind):
        return column  # uint64: the schema check has set aside values beyond INTEGER's range
    return column.cast(pa.string())


def _is_binary(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
        or kind == pa.binary_view()
    )


def _json(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Nested values as JSON text, by DuckDB (one vectorized pass, order kept)."""
    con = _engine.cursor()
    try:
        con.register("__mf_nested", pa.table({"v": column}))
        text = con.sql("SELECT to_json(v)::VARCHAR AS v FROM __mf_nested").to_arrow_table()
    finally:
        con.close()
    return text.column("v")


def keys_table(con: sqlite3.Connection, data: pa.Table, keys: Sequence[str]) -> str:
    """The batch's ``keys`` (``data`` already ``stored``) in a temporary table of the
    transaction, for a semi-join; returns its name."""
    columns = ", ".join(ident(k) for k in keys)
    con.execute(f"DROP TABLE IF EXISTS temp.{KEYS}")
    con.execute(f"CREATE TEMP TABLE {KEYS} ({columns})")
    insert(con, KEYS, data.select(list(keys)))  # unqualified, the temporary table comes first
    return f"temp.{KEYS}"
