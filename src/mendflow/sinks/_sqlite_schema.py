"""The SQLite table's schema meets the batch's, inside the load transaction.

The first batch creates the table from its columns' affinities (``_sqlite_rows``), with a
``UNIQUE`` constraint on the primary key in merge mode (not ``PRIMARY KEY``: a lone ``INTEGER
PRIMARY KEY`` becomes SQLite's rowid and would make up a key for a row whose key is null). Later
batches are compared with the table (``mendflow.contracts.schema.diff``, in DuckDB's type
names: ``INTEGER`` is ``BIGINT``, ``REAL`` is ``DOUBLE``, ``TEXT`` is ``VARCHAR``) and the
load's policy decides (``plan``): ``evolve`` adds the new columns (``ALTER TABLE ... ADD
COLUMN``), ``discard_columns`` drops them from the batch, ``freeze`` sets aside the rows that
have a value in one. Columns are never retyped (SQLite cannot alter a column's type without
rebuilding the table): a value whose type does not fit its column is checked one by one
(``_sqlite_fit``). The DDL and the new row of ``_mendflow_schema_versions`` run in the load's
transaction, so they roll back with it. Versions list columns with their SQLite types.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pyarrow as pa

from mendflow._sql import ident
from mendflow.batch import Load, no_dead_letters
from mendflow.contracts.schema import NULL, Change, Column, SchemaDiff, Version, between, diff, plan
from mendflow.sinks import _drift
from mendflow.sinks import _sqlite_fit as _fitting
from mendflow.sinks import _sqlite_rows as _rows
from mendflow.sinks._drift import Columns, Drift

__all__ = ["DDL", "Columns", "Reconciled", "columns_of", "history", "reconcile"]

DDL: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS _mendflow_schema_versions (table_name TEXT NOT NULL, "
    "version INTEGER NOT NULL, pipeline TEXT NOT NULL, run_id TEXT NOT NULL, "
    "batch_id TEXT NOT NULL, changed_at TEXT NOT NULL, columns TEXT NOT NULL, "
    "changes TEXT NOT NULL, PRIMARY KEY (table_name, version))",
)

_STAGE = "_mendflow_stage__"
_AFFINITY = {"BIGINT": "INTEGER", "UBIGINT": "INTEGER", "DOUBLE": "REAL", "VARCHAR": "TEXT",
             "BLOB": "BLOB"}


@dataclass(frozen=True, slots=True)
class Reconciled:
    """The batch as SQLite stores it (``data``) and as read (``rows``, for the checks), both
    without the rows set aside (``dead_letters``); the table's columns after; what changed."""

    data: pa.Table
    rows: pa.Table
    columns: Columns
    dead_letters: pa.Table = field(default_factory=no_dead_letters)
    changes: Drift | None = None


def reconcile(con: sqlite3.Connection, target: str, load: Load) -> Reconciled:
    """Create ``target`` from the batch if missing, else apply the load's schema policy; then
    check the batch's values against the columns as they are after the DDL."""
    stored = _rows.stored(load.data)
    batch = _fitting.types(stored)
    name = target.removeprefix(_STAGE) if load.mode == "replace" else target
    table = columns_of(con, target)
    ddl: tuple[Change, ...] = ()
    if not table:
        table, ddl = _create(con, target, name, load, batch)
    todo = plan(_diff(table, batch), load.schema)
    if todo.add:
        table, ddl = _add(con, target, name, load, todo.add)
    checked = _diff(table, batch).narrowed
    fitted = _fitting.fit(stored, name, replace(todo, check=checked))
    if fitted.broken is not None:
        out = _drift.quarantine(load, name, table, fitted.broken, _version(con, name))
        return Reconciled(out.data, out.data, table, out.dead_letters, out.changes)
    rest = replace(todo, add=(), widen=(), check=checked).changes
    changes = ddl + tuple(_named(c) for c in rest)
    drift = Drift(name, _version(con, name), changes) if changes else None
    have = {c.name for c in table}
    drop = [c.name for c in batch if c.name not in have]
    rows = load.data if fitted.keep is None else load.data.filter(fitted.keep)
    return Reconciled(fitted.data.drop_columns(drop), rows.drop_columns(drop), table,
                      fitted.dead_letters, drift)


def columns_of(con: sqlite3.Connection, table: str) -> Columns:
    """The columns of ``table`` in order, with their declared types (none: no such table)."""
    rows = con.execute("SELECT name, type FROM pragma_table_info(?) ORDER BY cid", [table])
    return tuple(Column(str(name), str(kind).upper()) for name, kind in rows.fetchall())


def history(con: sqlite3.Connection, table: str) -> list[Version]:
    """Every recorded version of ``table``'s schema, oldest first, with its diff."""
    rows = con.execute(
        "SELECT version, pipeline, run_id, batch_id, "
        "CAST(round((julianday(changed_at) - 2440587.5) * 86400000000.0) AS INTEGER), "
        "columns, changes FROM _mendflow_schema_versions WHERE table_name = ? ORDER BY version",
        [table],
    ).fetchall()
    return [_drift.version_of(table, row) for row in rows]


# -- creating and meeting -------------------------------------------------------------------


def _create(con: sqlite3.Connection, target: str, name: str, load: Load, batch: Columns
            ) -> tuple[Columns, tuple[Change, ...]]:
    """The table from the batch's typed columns (all text when none has a type yet), and its
    version: the first, or the next when its columns differ from the last (replace mode)."""
    typed = [c for c in batch if c.type != NULL] or [Column(c.name, "VARCHAR") for c in batch]
    parts = [f"{ident(c.name)} {_AFFINITY.get(c.type, 'TEXT')}" for c in typed]
    names = {c.name for c in typed}
    if load.mode == "merge" and load.primary_key and set(load.primary_key) <= names:
        parts.append(f"UNIQUE ({', '.join(ident(k) for k in load.primary_key)})")
    con.execute(f"CREATE TABLE {ident(target)} ({', '.join(parts)})")
    columns = columns_of(con, target)
    last = _last(con, name)
    changes = between(last or (), columns)
    if changes or last is None:
        _record(con, load, name, columns, changes)
    return columns, changes


def _add(con: sqlite3.Connection, target: str, name: str, load: Load,
         added: Sequence[Column]) -> tuple[Columns, tuple[Change, ...]]:
    """Add the batch's new columns; record the table's next version."""
    changes = tuple(Change("added", c.name, None, _AFFINITY.get(c.type, "TEXT")) for c in added)
    for change in changes:
        con.execute(
            f"ALTER TABLE {ident(target)} ADD COLUMN {ident(change.column)} {change.after}"
        )
    columns = columns_of(con, target)
    _record(con, load, name, columns, changes)
    return columns, changes


def _diff(table: Columns, batch: Columns) -> SchemaDiff:
    """The batch against the table in the lattice's names; never a widening (see module)."""
    given = {c.name: c.type for c in batch}
    canonical = tuple(Column(c.name, _canonical(c.type, given.get(c.name, NULL))) for c in table)
    found = diff(canonical, batch)
    return replace(found, retyped=tuple(replace(r, wider=None, held=None) for r in found.retyped))


def _canonical(declared: str, batch: str) -> str:
    """A declared type in the lattice's names, by SQLite's affinity rules; a column declared
    without a type takes any value as it is (the batch's own type)."""
    if "INT" in declared:
        return "BIGINT"
    if any(part in declared for part in ("CHAR", "CLOB", "TEXT")):
        return "VARCHAR"
    if "BLOB" in declared:
        return "BLOB"
    return batch if not declared else "DOUBLE"  # REAL, and NUMERIC (checked like a double)


def _named(change: Change) -> Change:
    """A change with the lattice's type names given as SQLite's affinities."""
    before = None if change.before is None else _AFFINITY.get(change.before, change.before)
    after = None if change.after is None else _AFFINITY.get(change.after, change.after)
    return Change(change.change, change.column, before, after)


# -- versions --------------------------------------------------------------------------------


def _record(con: sqlite3.Connection, load: Load, table: str, columns: Columns,
            changes: Sequence[Change]) -> None:
    """Write the table's next version with its diff."""
    version = _version(con, table) + 1
    con.execute(
        "INSERT INTO _mendflow_schema_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [table, version, load.pipeline, load.run_id, load.batch_id,
         dt.datetime.now(dt.UTC).isoformat(), json.dumps({c.name: c.type for c in columns}),
         json.dumps([c.as_dict() for c in changes])],
    )


def _version(con: sqlite3.Connection, table: str) -> int:
    row = con.execute(
        "SELECT coalesce(max(version), 0) FROM _mendflow_schema_versions WHERE table_name = ?",
        [table],
    ).fetchone()
    return int(row[0]) if row else 0


def _last(con: sqlite3.Connection, table: str) -> Columns | None:
    row = con.execute(
        "SELECT columns FROM _mendflow_schema_versions WHERE table_name = ? "
        "ORDER BY version DESC LIMIT 1",
        [table],
    ).fetchone()
    return tuple(Column(n, t) for n, t in json.loads(row[0]).items()) if row else None
