"""The DuckDB table's schema meets the batch's, inside the load transaction.

The first batch creates the table (version 1). Later batches are compared with the table
(``mendflow.contracts.schema.diff``) and the load's policy decides (``plan``): the DDL
(``ADD COLUMN``, ``ALTER COLUMN ... TYPE``) and the new row of ``_mendflow_schema_versions`` run
in the load's transaction, so they roll back with it. Values whose type does not fit the table's
are checked in one DuckDB query (``TRY_CAST`` there and back, compared); rows that do not
survive become dead letters (stage ``load``), or under ``freeze`` the whole batch is quarantined.

Columns whose every value is null (DuckDB type ``NULL``) add nothing: the table is created and
evolved without them until a batch brings values. A table made outside mendflow starts its
history at its first change. In replace mode the history is kept under the table's own name,
and a staging table created with the columns of the last version adds no version.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow.compute as pc

from mendflow._sql import ident
from mendflow.batch import Load, no_dead_letters
from mendflow.contracts.schema import (
    NULL,
    Change,
    Column,
    Plan,
    Retyped,
    SchemaDiff,
    Version,
    between,
    diff,
    plan,
    settle,
)
from mendflow.sinks import _duckdb_fit as _fit
from mendflow.sinks._drift import Columns, Drift, Reconciled, quarantine, report, version_of

_BATCH = _fit.BATCH
_STAGE = "_mendflow_stage__"
_ALIASES = {"TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ", "TIME WITH TIME ZONE": "TIMETZ",
            '"NULL"': NULL}

DDL: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS _mendflow_schema_versions (table_name VARCHAR NOT NULL, "
    "version INTEGER NOT NULL, pipeline VARCHAR NOT NULL, run_id VARCHAR NOT NULL, "
    "batch_id VARCHAR NOT NULL, changed_at TIMESTAMPTZ NOT NULL, columns VARCHAR NOT NULL, "
    "changes VARCHAR NOT NULL, PRIMARY KEY (table_name, version))",
)

__all__ = ["DDL", "Columns", "Drift", "Reconciled", "Version", "columns_of", "history",
           "reconcile", "report"]


def reconcile(
    con: duckdb.DuckDBPyConnection, target: str, load: Load, known: Columns | None
) -> Reconciled:
    """Create ``target`` from the batch if missing, else apply the load's schema policy."""
    con.register(_BATCH, load.data)
    try:
        batch = _described(con.execute(f"DESCRIBE SELECT * FROM {_BATCH}").fetchall())
        table = known if known is not None else columns_of(con, target)
        if not table:
            return _create(con, target, load, batch)
        return _meet(con, target, load, table, batch)
    finally:
        with contextlib.suppress(duckdb.TransactionException):
            con.unregister(_BATCH)


def history(con: duckdb.DuckDBPyConnection, table: str) -> list[Version]:
    """Every recorded version of ``table``'s schema, oldest first, with its diff."""
    rows = con.execute(
        "SELECT version, pipeline, run_id, batch_id, epoch_us(changed_at), columns, changes "
        "FROM _mendflow_schema_versions WHERE table_name = ? ORDER BY version",
        [table],
    ).fetchall()
    return [version_of(table, row) for row in rows]


def columns_of(con: duckdb.DuckDBPyConnection, table: str) -> Columns:
    """The columns of ``table`` in order (none: no such table)."""
    return _described(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = ? ORDER BY ordinal_position",
            [table],
        ).fetchall()
    )


# -- creating and meeting -------------------------------------------------------------------


def _create(
    con: duckdb.DuckDBPyConnection, target: str, load: Load, batch: Columns
) -> Reconciled:
    """The table from the batch's typed columns (all text when none has a type yet)."""
    typed = [c for c in batch if c.type != NULL]
    select = ", ".join(ident(c.name) for c in typed) or ", ".join(
        f"CAST({ident(c.name)} AS VARCHAR) AS {ident(c.name)}" for c in batch
    )
    con.execute(f"CREATE TABLE {ident(target)} AS SELECT {select} FROM {_BATCH} LIMIT 0")
    columns = columns_of(con, target)
    name = _public(target, load)
    last = _last(con, name)
    changes = between(last or (), columns)
    drift = None
    if changes or last is None:
        drift = Drift(name, _record(con, load, name, columns, changes), changes)
    return Reconciled(load.data.select([c.name for c in columns]), columns, changes=drift)


def _meet(
    con: duckdb.DuckDBPyConnection, target: str, load: Load, table: Columns, batch: Columns
) -> Reconciled:
    """Apply the policy's plan: check values, quarantine or alter, and shape the batch."""
    found = diff(table, batch)
    if load.schema != "freeze" and any(r.held for r in found.retyped):
        found = settle(found, _held(con, target, found))
    todo = plan(found, load.schema)
    have = {c.name for c in table}
    drop = [c.name for c in batch if c.name not in have and c.type == NULL]
    drop += [*todo.discard, *todo.reject]
    if not todo.changes and not drop:
        return Reconciled(load.data, table)
    name = _public(target, load)
    split = _fit.split(con, name, todo) if todo.check or todo.reject else None
    if split is not None and todo.quarantine and pc.any(split["broken"]).as_py():
        return quarantine(load, name, table, split, _version(con, name))
    columns = table
    if todo.ddl:
        _alter(con, target, todo)
        columns = columns_of(con, target)
        version = _record(con, load, name, columns, todo.ddl)
    else:
        version = _version(con, name)
    data, dead = load.data, no_dead_letters()
    if split is not None:
        data, dead = _fit.apart(data, split, "load")
    drift = Drift(name, version, todo.changes) if todo.changes else None
    return Reconciled(data.drop_columns(drop), columns, dead, drift)


def _held(con: duckdb.DuckDBPyConnection, target: str, found: SchemaDiff) -> list[str]:
    """The columns whose every value survives the round trip into their held widening."""
    held = [r for r in found.retyped if r.held]
    checks = ", ".join(f"coalesce(bool_and({_kept(r)}), TRUE)" for r in held)
    (fit,) = con.execute(f"SELECT {checks} FROM {ident(target)}").fetchall()
    return [r.column for r, ok in zip(held, fit, strict=True) if ok]


def _kept(retyped: Retyped) -> str:
    """SQL: the table's value comes back unchanged from the held widening (or is null)."""
    column = ident(retyped.column)
    there = f"TRY_CAST({column} AS {retyped.held})"
    return f"{column} IS NULL OR coalesce(TRY_CAST({there} AS {retyped.table}) = {column}, FALSE)"


def _alter(con: duckdb.DuckDBPyConnection, target: str, todo: Plan) -> None:
    table = ident(target)
    for column in todo.add:
        con.execute(f"ALTER TABLE {table} ADD COLUMN {ident(column.name)} {column.type}")
    for change in todo.widen:
        con.execute(f"ALTER TABLE {table} ALTER COLUMN {ident(change.column)} TYPE {change.after}")


# -- versions --------------------------------------------------------------------------------


def _record(
    con: duckdb.DuckDBPyConnection,
    load: Load,
    table: str,
    columns: Columns,
    changes: Sequence[Change],
) -> int:
    """Write the table's next version with its diff; return its number."""
    version = _version(con, table) + 1
    con.execute(
        "INSERT INTO _mendflow_schema_versions VALUES (?, ?, ?, ?, ?, now(), ?, ?)",
        [table, version, load.pipeline, load.run_id, load.batch_id,
         json.dumps({c.name: c.type for c in columns}),
         json.dumps([c.as_dict() for c in changes])],
    )
    return version


def _version(con: duckdb.DuckDBPyConnection, table: str) -> int:
    rows = con.execute(
        "SELECT coalesce(max(version), 0) FROM _mendflow_schema_versions WHERE table_name = ?",
        [table],
    ).fetchall()  # fetched to the end: a pending result would block unregistering the batch
    return int(rows[0][0])


def _last(con: duckdb.DuckDBPyConnection, table: str) -> Columns | None:
    rows = con.execute(
        "SELECT columns FROM _mendflow_schema_versions WHERE table_name = ? "
        "ORDER BY version DESC LIMIT 1",
        [table],
    ).fetchall()
    return tuple(Column(n, t) for n, t in json.loads(rows[0][0]).items()) if rows else None


def _public(target: str, load: Load) -> str:
    """The table's own name (a replace run loads into a staging table named after it)."""
    return target.removeprefix(_STAGE) if load.mode == "replace" else target


def _described(rows: Sequence[Sequence[Any]]) -> Columns:
    return tuple(Column(str(r[0]), _ALIASES.get(str(r[1]), str(r[1]))) for r in rows)
