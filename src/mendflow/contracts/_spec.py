"""A contract to and from its YAML mapping, strictly: every unknown key or bad value is refused.

    contract:
      columns:
        id: {type: bigint, nullable: false}
        amount: {type: double, min: 0, max: 100000}
        status: {type: varchar, in: [new, paid, shipped], on_error: null}
        email: {type: varchar, regex: '^[^@]+@[^@]+$', max_length: 254}
        created_at: {type: timestamptz, on_error: fail}
      unique: [id]
      expressions:
        - {name: total_matches, sql: "total = amount * qty"}

A column may also be written as its type alone (``amount: double``). ``on_error: null`` (YAML's
null) and ``on_error: "null"`` both mean: set the value to null.
"""

from __future__ import annotations

from typing import Any

from mendflow._validate import as_mapping, as_string, describe, known, suggest
from mendflow.contracts.contract import (
    ON_ERROR,
    Column,
    ColumnCheck,
    Contract,
    Expr,
    Length,
    Matches,
    OneOf,
    Range,
)
from mendflow.exceptions import ConfigError

_TOP = {"columns", "unique", "expressions"}
_COLUMN = {"type", "nullable", "on_error", "min", "max", "in", "regex", "min_length",
           "max_length"}
_EXPR = {"name", "sql"}


def contract_from_spec(spec: Any, where: str) -> Contract:
    """The contract the mapping ``spec`` declares; ``where`` names it in error messages."""
    top = as_mapping(spec, where)
    known(top, _TOP, where)
    columns = as_mapping(top.get("columns") or {}, f"{where}.columns")
    built = {str(name): _column(value, f"{where}.columns.{name}") for name, value in
             columns.items()}
    unique = _names(top.get("unique") or [], f"{where}.unique")
    for name in unique:
        if built and name not in built:
            raise ConfigError(
                f"{where}.unique: {name!r} is not a declared column{suggest(name, built)}; "
                "declare it under `columns:`."
            )
    expressions = top.get("expressions") or []
    if not isinstance(expressions, list):
        raise ConfigError(f"{where}.expressions must be a list, not {describe(expressions)}.")
    exprs = tuple(_expr(e, f"{where}.expressions[{i}]") for i, e in enumerate(expressions))
    return Contract(built, unique=unique, expressions=exprs)


def contract_to_spec(contract: Contract) -> dict[str, Any]:
    """The mapping ``contract_from_spec`` reads back as ``contract``."""
    spec: dict[str, Any] = {
        "columns": {name: _column_spec(column) for name, column in contract.columns.items()}
    }
    if contract.unique:
        spec["unique"] = list(contract.unique)
    if contract.expressions:
        spec["expressions"] = [{"name": e.name, "sql": e.sql} for e in contract.expressions]
    return spec


def _column(value: Any, where: str) -> Column:
    if isinstance(value, str):
        value = {"type": value}
    spec = as_mapping(value, where)
    known(spec, _COLUMN, where)
    kind = as_string(spec.get("type"), f"{where}.type")
    on_error = spec.get("on_error", "dead_letter")
    on_error = "null" if on_error is None else on_error
    if on_error not in ON_ERROR:
        raise ConfigError(
            f"{where}.on_error: unknown policy {on_error!r}{suggest(on_error, set(ON_ERROR))}; "
            f"use one of: {', '.join(ON_ERROR)}."
        )
    nullable = spec.get("nullable", True)
    if not isinstance(nullable, bool):
        raise ConfigError(f"{where}.nullable must be true or false, not {describe(nullable)}.")
    try:
        return Column(kind, nullable=nullable, checks=_checks(spec), on_error=on_error)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _checks(spec: dict[str, Any]) -> tuple[ColumnCheck, ...]:
    checks: list[ColumnCheck] = []
    if "min" in spec or "max" in spec:
        checks.append(Range(spec.get("min"), spec.get("max")))
    if "in" in spec:
        values = spec["in"]
        if not isinstance(values, list):
            raise ConfigError(f"`in:` must be a list of values, not {describe(values)}.")
        checks.append(OneOf(tuple(values)))
    if "regex" in spec:
        checks.append(Matches(as_string(spec["regex"], "regex")))
    if "min_length" in spec or "max_length" in spec:
        checks.append(Length(spec.get("min_length"), spec.get("max_length")))
    return tuple(checks)


def _column_spec(column: Column) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": column.type}
    if not column.nullable:
        spec["nullable"] = False
    for check in column.checks:
        if isinstance(check, Range):
            spec |= {k: v for k, v in (("min", check.min), ("max", check.max)) if v is not None}
        elif isinstance(check, OneOf):
            spec["in"] = list(check.values)
        elif isinstance(check, Matches):
            spec["regex"] = check.pattern
        else:
            pairs = (("min_length", check.min), ("max_length", check.max))
            spec |= {k: v for k, v in pairs if v is not None}
    if column.on_error != "dead_letter":
        spec["on_error"] = column.on_error
    return spec


def _names(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(f"{where} must be a column name or a list of column names.")
    return tuple(items)


def _expr(value: Any, where: str) -> Expr:
    spec = as_mapping(value, where)
    known(spec, _EXPR, where)
    name = as_string(spec.get("name"), f"{where}.name")
    sql = as_string(spec.get("sql"), f"{where}.sql")
    try:
        return Expr(name, sql)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
