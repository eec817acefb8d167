"""Declared column types, applied to a whole batch at once.

Each declared column is cast with DuckDB's TRY_CAST over the Arrow batch. A row whose non-null
value does not cast, or whose primary key is null, is split off as a dead letter with a reason
naming the column, the value and the type; reasons are built for those rows only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from mendflow._sql import ident
from mendflow.batch import DEAD_LETTER_SCHEMA, no_dead_letters

_BAD, _REASON, _RECORD = "__mf_bad", "__mf_reason", "__mf_record"


def split(
    con: duckdb.DuckDBPyConnection,
    table: pa.Table,
    *,
    types: Mapping[str, str],
    not_null: Sequence[str] = (),
    stage: str = "coerce",
) -> tuple[pa.Table, pa.Table]:
    """Return (rows cast to their declared types, dead letters) for ``table``."""
    present = set(table.column_names)
    casts = {c: t for c, t in types.items() if c in present}
    keys = [k for k in not_null if k in present]
    if not casts and not _has_nulls(table, keys):
        return table, no_dead_letters()
    failures = [
        (f"{ident(c)} IS NOT NULL AND TRY_CAST({ident(c)} AS {t}) IS NULL",
         f"'{_literal(c)}: ' || CAST({ident(c)} AS VARCHAR) || ' is not {t}'")
        for c, t in casts.items()
    ] + [(f"{ident(k)} IS NULL", f"'{_literal(k)}: primary key is null'") for k in keys]
    bad = " OR ".join(f"({cond})" for cond, _ in failures) or "false"
    reasons = ", ".join(f"CASE WHEN {cond} THEN {why} END" for cond, why in failures)
    replace = ", ".join(f"TRY_CAST({ident(c)} AS {t}) AS {ident(c)}" for c, t in casts.items())
    select = f"* REPLACE ({replace})" if replace else "*"
    sql = (
        f"SELECT {select}, ({bad}) AS {_BAD}, "
        f"CASE WHEN {_BAD} THEN concat_ws('; ', {reasons}) END AS {_REASON}, "
        f"CASE WHEN {_BAD} THEN CAST(to_json(__mf_raw) AS VARCHAR) END AS {_RECORD} "
        "FROM __mf_raw"
    )
    con.register("__mf_raw", table)
    try:
        result = con.sql(sql).to_arrow_table()
    finally:
        con.unregister("__mf_raw")
    mask = result[_BAD]
    if not pc.any(mask).as_py():
        return result.drop_columns([_BAD, _REASON, _RECORD]), no_dead_letters()
    good = result.filter(pc.invert(mask)).drop_columns([_BAD, _REASON, _RECORD])
    return good, _dead_letters(result, mask, stage)


def set_aside(
    con: duckdb.DuckDBPyConnection,
    table: pa.Table,
    *,
    reason: str,
    raw: pa.Array | None = None,
) -> pa.Table:
    """Every row of ``table`` as a dead letter with ``reason`` (a quarantined batch); the
    record is the row's original bytes when ``raw`` holds them."""
    checks = json.dumps([{"check": "quarantine", "column": None, "message": reason}])
    sql = (
        "SELECT (row_number() OVER () - 1)::BIGINT AS row_index, 'quarantine' AS stage, "
        "$reason AS reason, $checks AS checks, "
        "encode(CAST(to_json(__mf_raw) AS VARCHAR)) AS record, 'json' AS format FROM __mf_raw"
    )
    con.register("__mf_raw", table)
    try:
        result = con.sql(sql, params={"reason": reason, "checks": checks}).to_arrow_table()
    finally:
        con.unregister("__mf_raw")
    dead = result.cast(DEAD_LETTER_SCHEMA)
    if raw is not None:
        dead = dead.set_column(4, "record", raw.cast(pa.binary()))
    return dead


def _dead_letters(result: pa.Table, mask: pa.ChunkedArray, stage: str) -> pa.Table:
    rows = result.filter(mask)
    index = pc.indices_nonzero(mask.combine_chunks())
    return pa.table(
        [
            index.cast(pa.int64()),
            pa.array([stage] * rows.num_rows, pa.string()),
            rows[_REASON].cast(pa.string()),
            pa.nulls(rows.num_rows, pa.string()),
            rows[_RECORD].cast(pa.string()).cast(pa.binary()),
            pa.array(["json"] * rows.num_rows, pa.string()),
        ],
        schema=DEAD_LETTER_SCHEMA,
    )


def _has_nulls(table: pa.Table, keys: Sequence[str]) -> bool:
    return any(table[k].null_count for k in keys)


def _literal(text: str) -> str:
    """Escape ``text`` for use inside a single-quoted SQL string literal."""
    return text.replace("'", "''")
