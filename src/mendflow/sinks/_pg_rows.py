"""A batch's rows into a PostgreSQL table, inside the load's transaction.

The general path: the rows are COPYed in binary (``_pg_copy``) into a temporary table
``_mendflow_stage`` (dropped at commit), then moved by one ``INSERT ... SELECT`` that casts each
column to the table's type: plain for append and replace, ``ON CONFLICT (key) DO UPDATE`` for
merge, or ``DELETE ... USING`` the staged keys then ``INSERT`` when the table has no unique index
on the key (one made outside mendflow).

The direct path skips the stage: the rows are COPYed straight into the table when the result is
the same. That holds when every column's binary encoding is the table's own type, no check reads
the stage (``UniqueKey`` does), and, for merge, no row of the table has a key in the batch's key
range, probed through the key's unique index: a first load, or keys that only grow (ids, event
times). The batch holds one row per key (the runner keeps the last one read), so then nothing
would conflict. Only keys whose order is the same in Arrow and in PostgreSQL are probed (numbers,
dates, timestamps; text is compared by collation there).
"""

from __future__ import annotations

from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from mendflow.batch import Load
from mendflow.sinks import _pg_copy as _copy
from mendflow.sinks import _pg_keys as _keys
from mendflow.sinks._pg_schema import Table

__all__ = ["STAGE", "write"]

#: The batch's temporary table (dropped at commit); the audit reads the batch's keys there.
STAGE = "_mendflow_stage"
#: ``format_type`` spellings of the types ``_pg_copy`` encodes as they are.
_WIRE = {
    "smallint": "SMALLINT", "integer": "INTEGER", "bigint": "BIGINT", "real": "REAL",
    "double precision": "DOUBLE PRECISION", "boolean": "BOOLEAN", "text": "TEXT",
    "bytea": "BYTEA", "date": "DATE", "timestamp without time zone": "TIMESTAMP",
    "timestamp with time zone": "TIMESTAMPTZ", "time without time zone": "TIME",
    "interval": "INTERVAL",
}


def write(
    cur: psycopg.Cursor[Any], schema: str, target: str, data: pa.Table, load: Load,
    table: Table,
) -> None:
    """Put ``data`` into ``schema.target`` as ``load.mode`` says."""
    into = sql.Identifier(schema, target)
    keys = load.primary_key
    later = _keys.pending(cur, schema, target, table.pg)
    if later is not None:
        span = _outside(data, load, table, later)
        if span is not None:  # no row of the batch can meet one of the table
            _copy_into(cur, into, data)
            _keys.widen(cur, schema, target, *span)
            return
        _keys.build(cur, schema, target)
    unique = load.mode == "merge" and bool(keys) and _unique(cur, into.as_string(cur), keys)
    if _direct(cur, into, data, load, table, unique):
        _copy_into(cur, into, data)
        return
    names = data.column_names
    columns = sql.SQL(", ").join(map(sql.Identifier, names))
    cur.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
        sql.Identifier(STAGE), sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(_copy.wire_type(t)))
            for n, t in zip(names, data.schema.types, strict=True))))
    _copy_into(cur, sql.Identifier(STAGE), data)
    select = sql.SQL(", ").join(
        sql.SQL("{}::{}").format(sql.Identifier(n), sql.SQL(table.pg[n])) for n in names)
    insert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
        into, columns, select, sql.Identifier(STAGE))
    if unique:
        rest = [n for n in names if n not in keys]
        action = sql.SQL("DO NOTHING") if not rest else sql.SQL("DO UPDATE SET {}").format(
            sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n))
                               for n in rest))
        insert = sql.SQL("{} ON CONFLICT ({}) {}").format(
            insert, sql.SQL(", ").join(map(sql.Identifier, keys)), action)
    elif load.mode == "merge" and keys:
        match = sql.SQL(" AND ").join(
            sql.SQL("t.{0} = s.{0}").format(sql.Identifier(k)) for k in keys)
        cur.execute(sql.SQL("DELETE FROM {} AS t USING {} AS s WHERE {}").format(
            into, sql.Identifier(STAGE), match))
    cur.execute(insert)


def _outside(
    data: pa.Table, load: Load, table: Table, later: _keys.Pending
) -> tuple[Any, Any] | None:
    """The noted span grown by the batch's, when the batch may go straight into a table whose
    key is not built yet (``_pg_keys``); None when the key must be built first."""
    keys, low, high = later
    if (load.mode != "merge" or load.primary_key != keys or load.checks or not data.num_rows
            or any(data[k].null_count for k in keys) or not _encodes(data, table)
            or not _ordered(data[keys[0]].type)):
        return None
    span = pc.min_max(data[keys[0]]).as_py()
    first, last = span["min"], span["max"]
    if low is None:
        return first, last
    if last < low:
        return first, high
    if first > high:
        return low, last
    return None


def _encodes(data: pa.Table, table: Table) -> bool:
    """Whether every column's binary encoding is its table column's own type."""
    return all(_WIRE.get(table.pg[name]) == _copy.wire_type(kind)
               for name, kind in zip(data.column_names, data.schema.types, strict=True))


def _direct(
    cur: psycopg.Cursor[Any], into: sql.Identifier, data: pa.Table, load: Load, table: Table,
    unique: bool,
) -> bool:
    """Whether COPY straight into the table gives what the general path would (see above)."""
    if load.checks or not data.num_rows or not _encodes(data, table):
        return False
    if load.mode != "merge" or not load.primary_key:
        return True
    first = data[load.primary_key[0]]
    if not unique or not _ordered(first.type):
        return False
    span = pc.min_max(first).as_py()
    cur.execute(sql.SQL("SELECT 1 FROM {} WHERE {} BETWEEN %s AND %s LIMIT 1").format(
        into, sql.Identifier(load.primary_key[0])), (span["min"], span["max"]))
    return cur.fetchone() is None


def _ordered(kind: pa.DataType) -> bool:
    """Keys ordered alike in Arrow and PostgreSQL, read back exactly (no nanoseconds)."""
    if pa.types.is_timestamp(kind):
        return bool(kind.unit != "ns")
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind)
                or pa.types.is_date32(kind))


def _copy_into(cur: psycopg.Cursor[Any], into: sql.Identifier, data: pa.Table) -> None:
    names = sql.SQL(", ").join(map(sql.Identifier, data.column_names))
    with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(into, names)) as copy:
        for chunk in _copy.stream(data):  # encoding overlaps the server's parsing
            copy.write(chunk)


def _unique(cur: psycopg.Cursor[Any], table: str, keys: tuple[str, ...]) -> bool:
    """Whether ``table`` has a unique index on exactly ``keys`` (ON CONFLICT needs one)."""
    cur.execute(
        "SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass(%s) AND i.indisunique "
        "AND i.indpred IS NULL AND (SELECT array_agg(a.attname::text ORDER BY a.attname) "
        "FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) "
        "= (SELECT array_agg(k ORDER BY k) FROM unnest(%s::text[]) AS k) "
        "AND i.indnkeyatts = cardinality(%s::text[])",
        (table, list(keys), list(keys)),
    )
    return cur.fetchone() is not None
