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
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from mendflow import _engine
from mendflow._sql import ident
from mendflow.batch import DEAD_LETTER_SCHEMA, no_dead_letters
from mendflow.contracts.contract import Column, Contract, Length, Matches, OneOf, Range
from mendflow.exceptions import BadData, ConfigError

__all__ = ["set_aside", "validate"]

_INDEX, _DUP, _BAD = "__mf_i", "__mf_dup", "__mf_bad"


@dataclass(frozen=True, slots=True)
class _Check:
    """One failure condition: its flag column, and how a bad row's message is built."""

    flag: str
    check: str
    column: str | None
    message: str  # SQL over the row as read (alias ``r``) giving the message text
    cast: bool = False  # a value that did not cast: stage "coerce"


@dataclass(slots=True)
class _Plan:
    """The SQL of both queries and the values bound into them, built column by column."""

    params: dict[str, Any] = field(default_factory=dict)  # bound into the flags query
    texts: dict[str, Any] = field(default_factory=dict)  # bound into the reasons query
    checks: list[_Check] = field(default_factory=list)
    tries: list[str] = field(default_factory=list)  # TRY_CAST of each present declared column
    values: list[str] = field(default_factory=list)  # typed output columns
    casts: list[str] = field(default_factory=list)  # cast-failure flags over the raw values
    conditions: list[str] = field(default_factory=list)  # check flags over the typed values
    fail: dict[str, tuple[str, str]] = field(default_factory=dict)  # flag -> (column, type)

    def bind(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"${name}"

    def text(self, value: str) -> str:
        return _bind(self.texts, value)

    def add(self, condition: str, *, check: str, column: str | None, message: str,
            cast: bool = False) -> None:
        flag = f"__mf_f{len(self.checks)}"
        (self.casts if cast else self.conditions).append(
            f"COALESCE({condition}, false) AS {flag}"
        )
        self.checks.append(_Check(flag, check, column, message, cast))


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
        plan = _plan(table, contract, present)
        source = _indexed(cur, table, contract) if contract.unique else table
        result = _query(cur, source, _flags_sql(plan, contract), plan.params)
        flags = [c.flag for c in plan.checks]
        _raise_failures(plan, result, table)
        mask = result[_BAD]
        good = result.drop_columns([*flags, _BAD])
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


def _plan(table: pa.Table, contract: Contract, keys: Sequence[str]) -> _Plan:
    plan = _Plan()
    present = set(table.column_names)
    for name, column in contract.columns.items():
        _plan_column(plan, name, column, present=name in present)
    for name in table.column_names:
        if name not in contract.columns:
            plan.values.append(ident(name))
    for key in keys:
        plan.add(f"{ident(key)} IS NULL", check="primary_key", column=key,
                 message=plan.text("primary key is null"))
    if contract.unique:
        label = ", ".join(contract.unique)
        plan.add(_DUP, check="unique", column=label, message=plan.text("duplicate key"))
    for expr in contract.expressions:
        plan.add(f"NOT ({expr.sql})", check="expression", column=None,
                 message=plan.text(f"{expr.name}: {expr.sql} is false"))
    return plan


def _plan_column(plan: _Plan, name: str, column: Column, *, present: bool) -> None:
    col, kind = ident(name), column.sql_type
    value = f"r.{col}"
    shown = f"coalesce(CAST({value} AS VARCHAR), 'null')"
    if not present:
        plan.values.append(f"CAST(NULL AS {kind}) AS {col}")
        if not column.nullable:
            plan.add("true", check="not_null", column=name, message=plan.text("column missing"))
        return
    typed = f"__mf_v{len(plan.tries)}"
    plan.tries.append(f"TRY_CAST({col} AS {kind}) AS {typed}")
    plan.values.append(f"{typed} AS {col}")
    null = f"{col} IS NULL"
    if column.on_error != "null":
        flag_message = f"{shown} || {plan.text(f' is not {column.type}')}"
        plan.add(f"{col} IS NOT NULL AND {typed} IS NULL", check="type",
                 column=name, message=flag_message, cast=True)
        null = f"{col} IS NULL AND NOT {plan.checks[-1].flag}"  # null as read, not by the cast
        if column.on_error == "fail":
            plan.fail[plan.checks[-1].flag] = (name, column.type)
    if not column.nullable:
        plan.add(null, check="not_null", column=name, message=plan.text("is null"))
    for check in column.checks:
        condition, kind_name, text = _condition(plan, col, kind, check)
        plan.add(condition, check=kind_name, column=name,
                 message=f"{shown} || {plan.text(text)}")


def _condition(plan: _Plan, col: str, kind: str, check: Any) -> tuple[str, str, str]:
    """(failure condition over the typed value, check name, message suffix) of ``check``."""
    if isinstance(check, Range):
        sides = _sides(plan, col, check.min, check.max, cast=kind)
        return sides, "range", _outside("", check.min, check.max)
    if isinstance(check, OneOf):
        values = ", ".join(f"CAST({plan.bind(v)} AS {kind})" for v in check.values)
        allowed = ", ".join(str(v) for v in check.values)
        return f"{col} NOT IN ({values})", "in", f" is not one of: {allowed}"
    if isinstance(check, Matches):
        condition = f"NOT regexp_matches(CAST({col} AS VARCHAR), {plan.bind(check.pattern)})"
        return condition, "regex", f" does not match {check.pattern}"
    assert isinstance(check, Length)
    sides = _sides(plan, f"length(CAST({col} AS VARCHAR))", check.min, check.max, cast="BIGINT")
    return sides, "length", _outside("has a length that ", check.min, check.max)


def _sides(plan: _Plan, value: str, low: Any, high: Any, *, cast: str) -> str:
    """SQL true when ``value`` is below ``low`` or above ``high`` (None: that side is open)."""
    sides = [f"{value} {op} CAST({plan.bind(bound)} AS {cast})"
             for op, bound in (("<", low), (">", high)) if bound is not None]
    return " OR ".join(sides)


def _outside(what: str, low: Any, high: Any) -> str:
    if low is None:
        return f" {what}is above the maximum {high}"
    if high is None:
        return f" {what}is below the minimum {low}"
    return f" {what}is outside [{low}, {high}]"


def _flags_sql(plan: _Plan, contract: Contract) -> str:
    """Typed columns, one flag per check and their OR, for every row, in the batch's order.

    Three layers: the casts, then the typed columns with the cast-failure flags (which see the
    raw values), then the check flags (which see the typed values by their column names).
    """
    bad = " OR ".join(c.flag for c in plan.checks) or "false"
    tries = "".join(f", {t}" for t in plan.tries)
    conditions = "".join(f", {c}" for c in plan.conditions)
    dup = [_DUP] if contract.unique else []
    typed = ", ".join([*plan.values, *plan.casts, *dup])
    rest = f"* EXCLUDE ({_DUP})" if contract.unique else "*"
    return (
        f"SELECT *, ({bad}) AS {_BAD} FROM (SELECT {rest}{conditions} FROM ("
        f"SELECT {typed} FROM (SELECT *{tries} FROM __mf_in)))"
    )


def _indexed(cur: duckdb.DuckDBPyConnection, table: pa.Table, contract: Contract) -> pa.Table:
    """``table`` with a column saying which rows repeat an earlier row's unique key."""
    ones = pa.repeat(pa.scalar(1, pa.int64()), table.num_rows)
    index = pc.subtract(pc.cumulative_sum(ones), 1)
    keys = []
    for key in contract.unique:
        column = contract.columns.get(key)
        if key not in table.column_names:
            return table.append_column(_DUP, pa.repeat(False, table.num_rows))
        keys.append(ident(key) if column is None else
                    f"TRY_CAST({ident(key)} AS {column.sql_type})")
    partition = ", ".join(keys)
    not_null = " AND ".join(f"{k} IS NOT NULL" for k in keys)
    sql = (
        f"SELECT {_INDEX} FROM (SELECT {_INDEX}, row_number() OVER (PARTITION BY {partition} "
        f"ORDER BY {_INDEX}) AS n FROM __mf_in WHERE {not_null}) WHERE n > 1"
    )
    dups = _query(cur, table.append_column(_INDEX, index), sql, {})
    return table.append_column(_DUP, pc.is_in(index, value_set=dups[_INDEX].combine_chunks()))


def _raise_failures(plan: _Plan, result: pa.Table, table: pa.Table) -> None:
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
    plan: _Plan,
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
        reasons.append(f"{_bind(params, label)} || {message}")
        entries.append(
            f"CASE WHEN f.{check.flag} THEN {{'check': {_bind(params, check.check)}, "
            f"'column': CAST({_bind(params, check.column)} AS VARCHAR), 'message': {message}}} END"
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


def _bind(params: dict[str, Any], value: Any) -> str:
    name = f"t{len(params)}"
    params[name] = value
    return f"${name}"


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
