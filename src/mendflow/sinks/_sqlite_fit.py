"""Values of a batch that do not fit their SQLite column, found in one DuckDB pass.

SQLite stores whatever it is given in any column, so the sink checks before it binds. The batch
arrives converted to SQLite's values (``_sqlite_rows.stored``: 64-bit integers, doubles, text,
bytes); each column whose type does not fit its table column's (``mendflow.contracts.schema``
in DuckDB's type names: an ``INTEGER`` column is ``BIGINT``, ``REAL`` is ``DOUBLE``, ``TEXT``
is ``VARCHAR``) is checked value by value by the DuckDB sink's own round trip
(``_duckdb_fit.split``, run in mendflow's in-memory DuckDB): ``4.0`` fits an ``INTEGER`` column
and is stored as ``4``, ``3.7`` does not; text fits a number column when it parses as one.
Rows that do not fit become dead letters (stage ``load``), or under ``freeze`` the batch is
quarantined whole (``_drift.quarantine``). A dead letter's record is the row as a JSON
object, as SQLite would have stored it (timestamps as ISO text, nested values as JSON text),
which replays to the same values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from mendflow import _engine
from mendflow._sql import ident
from mendflow.batch import no_dead_letters
from mendflow.contracts.schema import Change, Column, Plan
from mendflow.sinks import _duckdb_fit as _fit

__all__ = ["Fitted", "fit", "types"]

_KEPT = "__mf_kept"


@dataclass(frozen=True, slots=True)
class Fitted:
    """The rows that fit, cast to their columns' types; which rows of the batch they are
    (``keep``, None: all); the others as dead letters. ``broken``: the batch must be quarantined
    whole, and this is ``_duckdb_fit.split``'s verdict for ``_drift.quarantine``."""

    data: pa.Table
    keep: pa.Array | None = None
    dead_letters: pa.Table = field(default_factory=no_dead_letters)
    broken: pa.Table | None = None


def types(data: pa.Table) -> tuple[Column, ...]:
    """The batch's columns with their DuckDB types (``NULL`` for an all-null column)."""
    con = _engine.cursor()
    try:
        con.register(_fit.BATCH, data)
        rows = con.execute(f"DESCRIBE SELECT * FROM {_fit.BATCH}").fetchall()
    finally:
        con.close()
    return tuple(Column(str(r[0]), str(r[1]).strip('"')) for r in rows)


def fit(data: pa.Table, table: str, todo: Plan) -> Fitted:
    """Check the plan's columns (``check``, ``reject``) over ``data``; set the misfits aside."""
    if not todo.check and not todo.reject:
        return Fitted(data)
    con = _engine.cursor()
    try:
        con.register(_fit.BATCH, data)
        split = _fit.split(con, table, todo)
        if todo.quarantine and pc.any(split["broken"]).as_py():
            return Fitted(data.slice(0, 0), broken=split)
        kept, dead = _fit.apart(data, split, "load")
        keep = None if kept is data else split["ok"].combine_chunks()
        return Fitted(_cast(con, kept, todo.check), keep, dead)
    finally:
        con.close()


def _cast(
    con: duckdb.DuckDBPyConnection, data: pa.Table, checked: Sequence[Change]
) -> pa.Table:
    """The checked columns in their table's types (every value left survives the cast)."""
    if not checked or not data.num_rows:
        return data
    casts = ", ".join(f"CAST({ident(c.column)} AS {c.after}) AS {ident(c.column)}" for c in checked)
    con.register(_KEPT, data)
    try:
        return con.sql(f"SELECT * REPLACE ({casts}) FROM {_KEPT}").to_arrow_table()
    finally:
        con.unregister(_KEPT)
