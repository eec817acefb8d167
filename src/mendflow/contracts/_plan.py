"""A contract compiled to SQL over one batch: typed columns and one boolean flag per check.

``build_plan`` walks the contract column by column; ``flags_sql`` is the query giving, for every
row, its typed values, one flag per failed check and their OR (``BAD``). Values are bound as
parameters (``Plan.bind`` for the flags query, ``Plan.text`` for the reasons query that
``mendflow.contracts.validate`` builds from ``Plan.checks`` over the bad rows alone); column
names are quoted with ``ident``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from mendflow._sql import ident
from mendflow.contracts.contract import Column, Contract, Length, Matches, OneOf, Range

DUP, BAD = "__mf_dup", "__mf_bad"


@dataclass(frozen=True, slots=True)
class Flag:
    """One failure condition: its flag column, and how a bad row's message is built."""

    flag: str
    check: str
    column: str | None
    message: str  # SQL over the row as read (alias ``r``) giving the message text
    cast: bool = False  # a value that did not cast: stage "coerce"


@dataclass(slots=True)
class Plan:
    """The SQL of both queries and the values bound into them, built column by column."""

    params: dict[str, Any] = field(default_factory=dict)  # bound into the flags query
    texts: dict[str, Any] = field(default_factory=dict)  # bound into the reasons query
    checks: list[Flag] = field(default_factory=list)
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
        return bind(self.texts, value)

    def add(self, condition: str, *, check: str, column: str | None, message: str,
            cast: bool = False) -> None:
        flag = f"__mf_f{len(self.checks)}"
        (self.casts if cast else self.conditions).append(
            f"COALESCE({condition}, false) AS {flag}"
        )
        self.checks.append(Flag(flag, check, column, message, cast))



def build_plan(table: pa.Table, contract: Contract, keys: Sequence[str]) -> Plan:
    plan = Plan()
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
        plan.add(DUP, check="unique", column=label, message=plan.text("duplicate key"))
    for expr in contract.expressions:
        plan.add(f"NOT ({expr.sql})", check="expression", column=None,
                 message=plan.text(f"{expr.name}: {expr.sql} is false"))
    return plan


def _plan_column(plan: Plan, name: str, column: Column, *, present: bool) -> None:
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


def _condition(plan: Plan, col: str, kind: str, check: Any) -> tuple[str, str, str]:
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


def _sides(plan: Plan, value: str, low: Any, high: Any, *, cast: str) -> str:
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


def flags_sql(plan: Plan, contract: Contract) -> str:
    """Typed columns, one flag per check and their OR, for every row, in the batch's order.

    Three layers: the casts, then the typed columns with the cast-failure flags (which see the
    raw values), then the check flags (which see the typed values by their column names).
    """
    bad = " OR ".join(c.flag for c in plan.checks) or "false"
    tries = "".join(f", {t}" for t in plan.tries)
    conditions = "".join(f", {c}" for c in plan.conditions)
    dup = [DUP] if contract.unique else []
    typed = ", ".join([*plan.values, *plan.casts, *dup])
    rest = f"* EXCLUDE ({DUP})" if contract.unique else "*"
    return (
        f"SELECT *, ({bad}) AS {BAD} FROM (SELECT {rest}{conditions} FROM ("
        f"SELECT {typed} FROM (SELECT *{tries} FROM __mf_in)))"
    )


def bind(params: dict[str, Any], value: Any) -> str:
    name = f"t{len(params)}"
    params[name] = value
    return f"${name}"
