"""A contract applied to a whole Arrow batch at once: good rows split from dead letters.

One DuckDB query over the registered batch casts every declared column (``TRY_CAST``) and
computes one boolean per check; the rows where any is true are the bad ones. Reasons are built
by a second query over the bad rows alone (building them for every row costs ~10x). A row
whose value did not cast is a dead letter of stage ``coerce`` (all its failed checks listed);
a row that cast but failed a check, of stage ``validate``. Columns the contract does not
declare pass untouched; a declared column missing from the batch is all nulls.

Every value (bounds, allowed values, patterns, messages) is bound as a parameter; column names
are quoted with ``ident``; only an ``Expr``'s SQL, written by the pipeline's author, is SQL text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from mendflow import _engine
from mendflow._sql import ident
from mendflow.batch import DEAD_LETTER_SCHEMA, no_dead_letters
from mendflow.contracts._plan import BAD, DUP, Plan, bind, build_plan, flags_sql
from mendflow.contracts.contract import Contract
from mendflow.exceptions import BadData, ConfigError

__all__ = ["set_aside", "validate"]

_INDEX = "__mf_i"


def validate(
    con: duckdb.DuckDBPyConnection | None,
    table: pa.Table,
    contract: Contract,
    *,
    raw: pa.Array | None = None,
    raw_format: str = "json",
    keys: Sequence[str] = (),
) -> tuple[pa.Table, pa.Table]:
    """Return (rows cast to their declared types, dead letters) for ``table``.

    ``raw`` holds each row's original bytes (the dead letter's record, byte-exact, written as
    ``raw_format``); without it the record is the row as read, as a JSON object. ``keys`` must
    not be null (a merge's primary key). Raises ``BadData`` when a value of an ``on_error:
    fail`` column does not cast.
    """
    present = [k for k in keys if k in table.column_names or k in contract.columns]
    nothing = not contract.columns and not contract.expressions and not _has_nulls(table, present)
    if nothing or not table.num_columns:  # DuckDB cannot register a table of no columns
        return table, no_dead_letters()
    with _cursor(con) as cur:
        plan = build_plan(table, contract, present)
        source = _indexed(cur, table, contract) if contract.unique else table
        result = _query(cur, source, flags_sql(plan, contract), plan.params)
        flags = [c.flag for c in plan.checks]
        _raise_failures(plan, result, table)
        mask = result[BAD]
        good = result.drop_columns([*flags, BAD])
        if not pc.any(mask).as_py():
            return good, no_dead_letters()
        dead = _dead_letters(cur, plan, table, result.select(flags), mask, raw, raw_format)
        return good.filter(pc.invert(mask)), dead


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
    dead = _query(con, table, sql, {"reason": reason, "checks": checks}, name="__mf_raw")
    dead = dead.cast(DEAD_LETTER_SCHEMA)
    if raw is not None:
        dead = dead.set_column(4, "record", raw.cast(pa.binary()))
    return dead




def _indexed(cur: duckdb.DuckDBPyConnection, table: pa.Table, contract: Contract) -> pa.Table:
    """``table`` with a column saying which rows repeat an earlier row's unique key."""
    ones = pa.repeat(pa.scalar(1, pa.int64()), table.num_rows)
    index = pc.subtract(pc.cumulative_sum(ones), 1)
    keys = []
    for key in contract.unique:
        column = contract.columns.get(key)
        if key not in table.column_names:
            return table.append_column(DUP, pa.repeat(False, table.num_rows))
        keys.append(ident(key) if column is None else
                    f"TRY_CAST({ident(key)} AS {column.sql_type})")
    partition = ", ".join(keys)
    not_null = " AND ".join(f"{k} IS NOT NULL" for k in keys)
    sql = (
        f"SELECT {_INDEX} FROM (SELECT {_INDEX}, row_number() OVER (PARTITION BY {partition} "
        f"ORDER BY {_INDEX}) AS n FROM __mf_in WHERE {not_null}) WHERE n > 1"
    )
    dups = _query(cur, table.append_column(_INDEX, index), sql, {})
    return table.append_column(DUP, pc.is_in(index, value_set=dups[_INDEX].combine_chunks()))


def _raise_failures(plan: Plan, result: pa.Table, table: pa.Table) -> None:
    """Raise ``BadData`` for the first value of an ``on_error: fail`` column that did not cast."""
    for flag, (name, kind) in plan.fail.items():
        if pc.any(result[flag]).as_py():
            row = pc.index(result[flag], True).as_py()
            value = table[name][row].as_py()
            raise BadData(
                f"column {name!r}: value {value!r} (row {row} of the batch) is not {kind}, and "
                "the contract says on_error: fail. Fix the source data, or set on_error: "
                "dead_letter (set such rows aside) or null (load such values as null)."
            )


def _dead_letters(
    cur: duckdb.DuckDBPyConnection,
    plan: Plan,
    table: pa.Table,
    flags: pa.Table,
    mask: pa.ChunkedArray,
    raw: pa.Array | None,
    raw_format: str,
) -> pa.Table:
    """The bad rows as dead letters: stage, reason line, checks JSON and record."""
    rows, bad = table.filter(mask), flags.filter(mask)
    params = dict(plan.texts)
    reasons, entries = [], []
    for check in plan.checks:
        label = "" if check.column is None else f"{check.column}: "
        message = f"(CASE WHEN f.{check.flag} THEN {check.message} END)"
        reasons.append(f"{bind(params, label)} || {message}")
        entries.append(
            f"CASE WHEN f.{check.flag} THEN {{'check': {bind(params, check.check)}, "
            f"'column': CAST({bind(params, check.column)} AS VARCHAR), 'message': {message}}} END"
        )
    cast = " OR ".join(f"f.{c.flag}" for c in plan.checks if c.cast) or "false"
    record = "''" if raw is not None else "to_json(r)"
    sql = (
        f"SELECT CASE WHEN {cast} THEN 'coerce' ELSE 'validate' END AS stage, "
        f"concat_ws('; ', {', '.join(reasons)}) AS reason, "
        f"CAST(to_json(list_filter([{', '.join(entries)}], lambda x: x IS NOT NULL)) AS VARCHAR) "
        f"AS checks, CAST({record} AS VARCHAR) AS record "
        "FROM __mf_in r POSITIONAL JOIN __mf_flags f"
    )
    cur.register("__mf_flags", bad)
    try:
        built = _query(cur, rows, sql, params)
    finally:
        _unregister(cur, "__mf_flags")
    records = (built["record"].cast(pa.binary()) if raw is None
               else raw.filter(mask.combine_chunks()).cast(pa.binary()))
    n = built.num_rows
    return pa.table(
        [
            pc.indices_nonzero(mask.combine_chunks()).cast(pa.int64()),
            built["stage"], built["reason"], built["checks"], records,
            pa.repeat(pa.scalar("json" if raw is None else raw_format), n),
        ],
        schema=DEAD_LETTER_SCHEMA,
    )




def _query(
    cur: duckdb.DuckDBPyConnection,
    table: pa.Table,
    sql: str,
    params: dict[str, Any],
    *,
    name: str = "__mf_in",
) -> pa.Table:
    cur.register(name, table)
    try:
        return cur.sql(sql, params=params).to_arrow_table()
    except duckdb.BinderException as exc:
        raise ConfigError(
            f"the contract does not fit the batch: {exc}. Check the column names in its "
            "expressions."
        ) from exc
    finally:
        _unregister(cur, name)


def _unregister(cur: duckdb.DuckDBPyConnection, name: str) -> None:
    with suppress(duckdb.TransactionException):  # inside an aborted transaction
        cur.unregister(name)


@contextmanager
def _cursor(con: duckdb.DuckDBPyConnection | None) -> Iterator[duckdb.DuckDBPyConnection]:
    if con is not None:
        yield con
        return
    cur = _engine.cursor()
    try:
        yield cur
    finally:
        cur.close()


def _has_nulls(table: pa.Table, keys: Sequence[str]) -> bool:
    return any(k in table.column_names and table[k].null_count for k in keys)
