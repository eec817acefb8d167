"""Values that do not fit their DuckDB column, found in one query over the batch.

``split`` checks each value whose type does not fit its column (``TRY_CAST`` into the column's
type and back, compared) and each value in a column a frozen table lacks; for the rows that fail
it builds the reason, the checks as JSON and the row as a JSON object, in the same query.
Names, messages and table names go in as bound values; identifiers through ``ident``.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from mendflow._sql import ident
from mendflow.batch import DEAD_LETTER_SCHEMA, Stage, no_dead_letters
from mendflow.contracts.schema import Change, Plan

__all__ = ["apart", "dead", "split"]

#: The name the batch is registered under while the schema meets it.
BATCH = "__mf_shape"


def split(con: duckdb.DuckDBPyConnection, table: str, todo: Plan) -> pa.Table:
    """One query over the batch: per row ``ok``, ``broken`` (a value does not fit its column's
    type) and, for rows not ok (every row when the batch may be quarantined), the reason, the
    checks as JSON and the row as a JSON object."""
    problems, params = _problems(table, todo)
    every = "TRUE" if todo.quarantine and todo.check else "FALSE"
    failed = "len(__mf_p) > 0"
    return con.sql(
        f"SELECT NOT ({failed}) AS ok, "
        "len(list_filter(__mf_p, lambda x: struct_extract(x, 'check') = 'schema_type')) > 0 "
        "AS broken, "
        f"CASE WHEN {failed} THEN array_to_string("
        "list_transform(__mf_p, lambda x: struct_extract(x, 'message')), '; ') END AS reason, "
        f"CASE WHEN {failed} THEN to_json(__mf_p)::VARCHAR END AS checks, "
        f"CASE WHEN {failed} OR {every} THEN encode(to_json(__mf_r)::VARCHAR) END AS record "
        f"FROM (SELECT {problems} AS __mf_p, __mf_r FROM {BATCH} AS __mf_r)",
        params=params,
    ).to_arrow_table()


def _problems(table: str, todo: Plan) -> tuple[str, list[object]]:
    """A list expression of the row's problems, each ``{check, column, message}``; the names,
    messages and table go in as bound values."""
    parts: list[str] = []
    params: list[object] = []
    for change in todo.check:
        column = ident(change.column)
        fits = f"{column} IS NULL OR coalesce({_survives(column, change)}, false)"
        parts.append(
            f"CASE WHEN NOT ({fits}) THEN {{'check': 'schema_type', 'column': ?, "
            f"'message': concat(?, left(to_json({column})::VARCHAR, 80), ?)}} END"
        )
        params += [change.column, f"column `{change.column}`: value ",
                   f" ({change.before}) does not fit the {change.after} column of table "
                   f"{table} without loss"]
    for name in todo.reject:
        parts.append(
            f"CASE WHEN {ident(name)} IS NOT NULL THEN {{'check': 'schema_frozen', "
            "'column': ?, 'message': ?} END"
        )
        params += [name, f"column `{name}` is not in table {table} (schema frozen)"]
    return f"list_filter([{', '.join(parts)}], lambda x: x IS NOT NULL)", params


def _survives(column: str, change: Change) -> str:
    """SQL: the value comes back unchanged from the table's type (text: it parses, and a number
    or a date parsed as the table's type equals the same text parsed wide)."""
    into, back = change.after, change.before
    cast = f"TRY_CAST({column} AS {into})"
    if back != "VARCHAR":
        return f"TRY_CAST({cast} AS {back}) = {column}"
    if into == "DATE":
        return f"{cast}::TIMESTAMP = TRY_CAST({column} AS TIMESTAMP)"
    if _numeric(into or ""):
        return f"{cast}::DOUBLE = TRY_CAST({column} AS DOUBLE)"
    return f"{cast} IS NOT NULL"


def _numeric(kind: str) -> bool:
    return kind.startswith("DECIMAL") or kind.endswith("INT") or kind in (
        "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER",
        "UBIGINT", "FLOAT", "DOUBLE",
    )


def apart(data: pa.Table, split: pa.Table, stage: Stage) -> tuple[pa.Table, pa.Table]:
    """The rows that fit, and the others as dead letters of ``stage``."""
    ok = split["ok"]
    if pc.all(ok).as_py():
        return data, no_dead_letters()
    bad = pc.invert(ok)
    return data.filter(ok), dead(pc.indices_nonzero(bad), split.filter(bad), stage)


def dead(rows: pa.Array, split: pa.Table, stage: Stage) -> pa.Table:
    n = split.num_rows
    return pa.table(
        [rows.cast(pa.int64()), pa.array([stage] * n, pa.string()), split["reason"],
         split["checks"], split["record"], pa.array(["json"] * n, pa.string())],
        schema=DEAD_LETTER_SCHEMA,
    )
