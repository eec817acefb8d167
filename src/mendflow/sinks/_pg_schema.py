"""The PostgreSQL table's schema meets the batch's, inside the load transaction.

The same policy as the DuckDB destination (``_duckdb_schema``): the first batch creates the table
(version 1; in merge mode its primary key comes once the first load is in, see ``_pg_keys``);
later batches are compared with it by ``mendflow.contracts.schema.diff`` and the policy's
``plan`` decides. DDL and the new row of
``_mendflow_schema_versions`` run in the load's transaction (PostgreSQL's DDL is transactional),
so they roll back with it.

Types are compared in the canonical spelling of ``mendflow.contracts.schema`` (DuckDB's names):
the batch's through DuckDB (which types Arrow exactly), the table's by translating PostgreSQL's
``format_type``. The values that must be checked (a narrowing, text into a typed column) are
checked by ``_duckdb_fit.split`` on the batch in an in-memory DuckDB, then cast there to the
table's types, so what reaches PostgreSQL is exact. Identifiers go through ``sql.Identifier``.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from mendflow.batch import Load, no_dead_letters
from mendflow.contracts.schema import NULL, Change, Column, Plan, Version, between, diff, plan
from mendflow.contracts.schema import settle as settled
from mendflow.sinks import _duckdb_fit as _fit
from mendflow.sinks import _pg_keys as _keys
from mendflow.sinks._drift import Columns, Drift, Reconciled, quarantine, version_of

__all__ = ["Table", "columns_of", "ddl", "described", "history", "pg_type", "reconcile"]

_BATCH = _fit.BATCH
_VERSIONS = "_mendflow_schema_versions"
_FROM_PG = {
    "smallint": "SMALLINT", "integer": "INTEGER", "bigint": "BIGINT", "real": "FLOAT",
    "double precision": "DOUBLE", "text": "VARCHAR", "boolean": "BOOLEAN", "date": "DATE",
    "timestamp without time zone": "TIMESTAMP", "timestamp with time zone": "TIMESTAMPTZ",
    "time without time zone": "TIME", "bytea": "BLOB", "jsonb": "JSON", "json": "JSON",
    "uuid": "UUID", "interval": "INTERVAL",
    # An unbounded numeric is taken as the widest decimal DuckDB checks exactly: values beyond
    # it become dead letters rather than being rounded.
    "numeric": "DECIMAL(38,10)",
}
_TO_PG = {
    "TINYINT": "smallint", "UTINYINT": "smallint", "SMALLINT": "smallint", "USMALLINT": "integer",
    "INTEGER": "integer", "UINTEGER": "bigint", "BIGINT": "bigint", "UBIGINT": "numeric(20,0)",
    "HUGEINT": "numeric(39,0)", "UHUGEINT": "numeric(39,0)", "FLOAT": "real",
    "DOUBLE": "double precision", "VARCHAR": "text", "BOOLEAN": "boolean", "DATE": "date",
    "TIMESTAMP": "timestamp", "TIMESTAMP_S": "timestamp", "TIMESTAMP_MS": "timestamp",
    "TIMESTAMP_NS": "timestamp", "TIMESTAMPTZ": "timestamptz", "TIME": "time", "BLOB": "bytea",
    "JSON": "jsonb", "UUID": "uuid", "INTERVAL": "interval",
}
_DECIMAL = re.compile(r"(?:DECIMAL|numeric)\((\d+),\s*(\d+)\)")
_ALIASES = {"TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ", "TIME WITH TIME ZONE": "TIMETZ",
            '"NULL"': NULL}
#: DuckDB's names (after ``_ALIASES``) of the plain Arrow types, known without asking it.
_ARROW = {
    pa.int8(): "TINYINT", pa.int16(): "SMALLINT", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
    pa.uint8(): "UTINYINT", pa.uint16(): "USMALLINT", pa.uint32(): "UINTEGER",
    pa.uint64(): "UBIGINT", pa.float32(): "FLOAT", pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN", pa.string(): "VARCHAR", pa.large_string(): "VARCHAR",
    pa.binary(): "BLOB", pa.large_binary(): "BLOB", pa.date32(): "DATE", pa.null(): NULL,
}
_ARROW_TS = {"s": "TIMESTAMP_S", "ms": "TIMESTAMP_MS", "us": "TIMESTAMP", "ns": "TIMESTAMP_NS"}
_ARROW_TZ = {"s": "TIMESTAMPTZ", "ms": "TIMESTAMPTZ", "us": "TIMESTAMPTZ"}


@dataclass(frozen=True, slots=True)
class Table:
    """A table's columns: canonical types for the diff, PostgreSQL's for the casts."""

    columns: Columns
    pg: dict[str, str]


def pg_type(canonical: str) -> str:
    """The PostgreSQL type a column of canonical type ``canonical`` is created with (nested
    values are kept as ``jsonb``)."""
    if canonical in _TO_PG:
        return _TO_PG[canonical]
    found = _DECIMAL.fullmatch(canonical)
    if found:
        return f"numeric({found.group(1)},{found.group(2)})"
    return "jsonb"  # STRUCT, MAP, LIST and arrays: their JSON text


def canonical(pg: str) -> str:
    """The canonical name of a PostgreSQL ``format_type`` spelling."""
    if pg in _FROM_PG:
        return _FROM_PG[pg]
    found = _DECIMAL.fullmatch(pg)
    if found:
        return f"DECIMAL({found.group(1)},{found.group(2)})"
    if pg.startswith(("character varying", "character(")):
        return "VARCHAR"
    if pg.startswith("timestamp(") or pg.startswith("time("):
        return "TIMESTAMPTZ" if "with time zone" in pg else "TIMESTAMP"
    return pg.upper()


def ddl(schema: str) -> list[sql.Composed]:
    """The versions table, in ``schema``."""
    return [sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (table_name TEXT NOT NULL, version INTEGER NOT NULL, "
        "pipeline TEXT NOT NULL, run_id TEXT NOT NULL, batch_id TEXT NOT NULL, "
        "changed_at TIMESTAMPTZ NOT NULL DEFAULT now(), columns TEXT NOT NULL, "
        "changes TEXT NOT NULL, PRIMARY KEY (table_name, version))"
    ).format(sql.Identifier(schema, _VERSIONS))]


def reconcile(
    cur: psycopg.Cursor[Any], duck: Callable[[], duckdb.DuckDBPyConnection], schema: str,
    target: str, load: Load, public: str, known: Table | None,
) -> tuple[Reconciled, Table]:
    """Create ``target`` from the batch if missing, else apply the load's schema policy; the
    batch comes back cast to the table's types. ``public`` names the table in the history.
    ``duck`` opens the in-memory DuckDB, asked for only when the batch needs it: a batch of
    plain Arrow types, met by the table as it is, never does (opening one costs 30-50 ms)."""
    given: list[duckdb.DuckDBPyConnection] = []

    def shaping() -> duckdb.DuckDBPyConnection:
        """DuckDB with the batch registered as ``_BATCH``."""
        if not given:
            given.append(duck())
            given[0].register(_BATCH, load.data)
        return given[0]

    try:
        batch = described(load.data.schema) or tuple(
            Column(str(r[0]), _ALIASES.get(str(r[1]), str(r[1])))
            for r in shaping().execute(f"DESCRIBE SELECT * FROM {_BATCH}").fetchall()
        )
        table = known if known is not None else columns_of(cur, schema, target)
        if not table.columns:
            return _create(cur, duck, schema, target, load, public, batch)
        return _meet(cur, shaping, schema, target, load, public, table, batch)
    finally:
        for con in given:
            with contextlib.suppress(duckdb.Error):
                con.unregister(_BATCH)


def described(arrow: pa.Schema) -> Columns | None:
    """The canonical columns of a batch of plain Arrow types, as DuckDB's ``DESCRIBE`` names
    them (a test holds the two together); None when a type is not one of those."""
    columns = []
    for field in arrow:
        kind = field.type
        if pa.types.is_timestamp(kind):
            name = (_ARROW_TZ if kind.tz else _ARROW_TS).get(kind.unit)
        else:
            name = _ARROW.get(kind)
        if name is None:
            return None
        columns.append(Column(field.name, name))
    return tuple(columns)


def columns_of(cur: psycopg.Cursor[Any], schema: str, table: str) -> Table:
    """The columns of ``schema.table`` in order (none: no such table)."""
    cur.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum",
        (schema, table),
    )
    rows = cur.fetchall()
    return Table(tuple(Column(n, canonical(t)) for n, t in rows), dict(rows))


def history(cur: psycopg.Cursor[Any], schema: str, table: str) -> list[Version]:
    """Every recorded version of ``table``'s schema, oldest first, with its diff."""
    cur.execute(
        sql.SQL(
            "SELECT version, pipeline, run_id, batch_id, "
            "(extract(epoch FROM changed_at) * 1000000)::bigint, columns, changes "
            "FROM {} WHERE table_name = %s ORDER BY version"
        ).format(sql.Identifier(schema, _VERSIONS)),
        (table,),
    )
    return [version_of(table, row) for row in cur.fetchall()]


# -- creating and meeting -------------------------------------------------------------------


def _create(
    cur: psycopg.Cursor[Any], duck: Callable[[], duckdb.DuckDBPyConnection], schema: str,
    target: str, load: Load, public: str, batch: Columns,
) -> tuple[Reconciled, Table]:
    """The table from the batch's typed columns (all text when none has a type yet)."""
    typed = [c for c in batch if c.type != NULL] or [Column(c.name, "VARCHAR") for c in batch]
    names = {c.name for c in typed}
    keyed = load.mode == "merge" and bool(load.primary_key) and set(load.primary_key) <= names
    # key columns are NOT NULL from the start: building the key later then scans nothing more
    parts = [sql.SQL("{} {}{}").format(
        sql.Identifier(c.name), sql.SQL(pg_type(c.type)),
        sql.SQL(" NOT NULL" if keyed and c.name in load.primary_key else ""))
        for c in typed]
    cur.execute(sql.SQL("CREATE TABLE {} ({})").format(
        sql.Identifier(schema, target), sql.SQL(", ").join(parts)))
    if keyed:
        _keys.defer(cur, schema, target, load.primary_key)  # built once the first load is in
    made = columns_of(cur, schema, target)
    last = _last(cur, schema, public)
    changes = between(last or (), made.columns)
    drift = None
    if changes or last is None:
        drift = Drift(public, _record(cur, schema, load, public, made.columns, changes), changes)
    data = _cast(duck, load.data.select([c.name for c in typed]), batch, made.columns)
    return Reconciled(data, made.columns, changes=drift), made


def _meet(
    cur: psycopg.Cursor[Any], duck: Callable[[], duckdb.DuckDBPyConnection], schema: str,
    target: str, load: Load, public: str, table: Table, batch: Columns,
) -> tuple[Reconciled, Table]:
    """Apply the policy's plan: check values, quarantine or alter, and shape the batch."""
    found = diff(table.columns, batch)
    if load.schema != "freeze" and any(r.held for r in found.retyped):
        found = settled(found, _held(cur, schema, target, [r.column for r in found.retyped
                                                           if r.held]))
    todo = plan(found, load.schema)
    have = {c.name for c in table.columns}
    drop = [c.name for c in batch if c.name not in have and c.type == NULL]
    drop += [*todo.discard, *todo.reject]
    data, dead, after, version = load.data, no_dead_letters(), table, 0
    split = _fit.split(duck(), public, todo) if todo.check or todo.reject else None
    if split is not None and todo.quarantine and pc.any(split["broken"]).as_py():
        return quarantine(load, public, table.columns, split, _version(cur, schema, public)), table
    if todo.ddl:
        _alter(cur, schema, target, todo)
        after = columns_of(cur, schema, target)
        version = _record(cur, schema, load, public, after.columns, todo.ddl)
    elif todo.changes:
        version = _version(cur, schema, public)
    if split is not None:
        data, dead = _fit.apart(data, split, "load")
    data = _cast(duck, data.drop_columns(drop), batch, after.columns)
    drift = Drift(public, version, todo.changes) if todo.changes else None
    return Reconciled(data, after.columns, dead, drift), after


def _cast(
    duck: Callable[[], duckdb.DuckDBPyConnection], data: pa.Table, batch: Columns,
    table: Columns,
) -> pa.Table:
    """``data`` with each column whose type differs from the table's cast to it in DuckDB (the
    values were checked to survive), so the rows reach PostgreSQL in the table's own types."""
    want = {c.name: c.type for c in table}
    given = {c.name: c.type for c in batch}
    moved = [n for n in data.column_names
             if n in want and given.get(n) not in (want[n], NULL)
             and (want[n] in _TO_PG or _DECIMAL.fullmatch(want[n]))]
    if not moved:
        return data
    from mendflow._sql import ident

    select = ", ".join(
        f"CAST({ident(n)} AS {want[n]}) AS {ident(n)}" if n in moved else ident(n)
        for n in data.column_names
    )
    con = duck()
    con.register("__mf_cast", data)
    try:
        return con.sql(f"SELECT {select} FROM __mf_cast").to_arrow_table()
    finally:
        con.unregister("__mf_cast")


def _held(cur: psycopg.Cursor[Any], schema: str, target: str, columns: Sequence[str]) -> list[str]:
    """The integer columns whose every value survives the round trip through DOUBLE."""
    checks = sql.SQL(", ").join(
        sql.SQL("coalesce(bool_and(abs({}) <= 9007199254740992), TRUE)").format(
            sql.Identifier(c)) for c in columns
    )
    cur.execute(sql.SQL("SELECT {} FROM {}").format(checks, sql.Identifier(schema, target)))
    fit = cur.fetchone() or ()
    return [c for c, ok in zip(columns, fit, strict=True) if ok]


def _alter(cur: psycopg.Cursor[Any], schema: str, target: str, todo: Plan) -> None:
    table = sql.Identifier(schema, target)
    for column in todo.add:
        cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
            table, sql.Identifier(column.name), sql.SQL(pg_type(column.type))))
    for change in todo.widen:
        cur.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(
            table, sql.Identifier(change.column), sql.SQL(pg_type(change.after or "VARCHAR"))))


# -- versions --------------------------------------------------------------------------------


def _record(
    cur: psycopg.Cursor[Any], schema: str, load: Load, table: str, columns: Columns,
    changes: Sequence[Change],
) -> int:
    """Write the table's next version with its diff; return its number."""
    version = _version(cur, schema, table) + 1
    cur.execute(
        sql.SQL("INSERT INTO {} (table_name, version, pipeline, run_id, batch_id, columns, "
                "changes) VALUES (%s, %s, %s, %s, %s, %s, %s)").format(
            sql.Identifier(schema, _VERSIONS)),
        (table, version, load.pipeline, load.run_id, load.batch_id,
         json.dumps({c.name: c.type for c in columns}),
         json.dumps([c.as_dict() for c in changes])),
    )
    return version


def _version(cur: psycopg.Cursor[Any], schema: str, table: str) -> int:
    cur.execute(
        sql.SQL("SELECT coalesce(max(version), 0) FROM {} WHERE table_name = %s").format(
            sql.Identifier(schema, _VERSIONS)),
        (table,),
    )
    row = cur.fetchone()
    return int(row[0]) if row else 0


def _last(cur: psycopg.Cursor[Any], schema: str, table: str) -> Columns | None:
    cur.execute(
        sql.SQL("SELECT columns FROM {} WHERE table_name = %s ORDER BY version DESC LIMIT 1")
        .format(sql.Identifier(schema, _VERSIONS)),
        (table,),
    )
    row = cur.fetchone()
    return tuple(Column(n, t) for n, t in json.loads(row[0]).items()) if row else None
