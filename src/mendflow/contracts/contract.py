"""A record contract: each column's type, nullability and checks, and checks across columns.

    Contract(
        columns={
            "id": Column("bigint", nullable=False),
            "amount": Column("double", checks=(Range(min=0, max=100_000),)),
            "status": Column("varchar", checks=(OneOf(("new", "paid")),), on_error="null"),
            "email": Column("varchar", checks=(Matches("^[^@]+@[^@]+$"), Length(max=254))),
        },
        unique=("id",),
        expressions=(Expr("total_matches", "total = amount * qty"),),
    )

A value that does not cast to its column's type follows the column's ``on_error``: the row
becomes a dead letter (``dead_letter``, the default), the value becomes null (``null``), or the
batch fails (``fail``). A row failing a check becomes a dead letter. ``Range`` bounds are
inclusive; ``Matches`` searches (anchor with ``^...$`` to match the whole value) with DuckDB's
RE2 syntax; an ``Expr`` is a DuckDB SQL boolean over the row's typed values, and a row fails it
only when it is false (null passes, as in an SQL CHECK constraint). ``unique`` keys must be
unique within a batch: every row after the first with the same non-null key is a dead letter.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal, TypeAlias, get_args

import duckdb

from mendflow import _engine
from mendflow._sql import sql_type
from mendflow.exceptions import ConfigError

OnError = Literal["dead_letter", "null", "fail"]
ON_ERROR: tuple[OnError, ...] = get_args(OnError)
Bound: TypeAlias = int | float | str | dt.date | dt.datetime | None


@dataclass(frozen=True, slots=True)
class Range:
    """The value lies between ``min`` and ``max``, both inclusive; None leaves a side open."""

    min: Bound = None
    max: Bound = None

    def __post_init__(self) -> None:
        for bound in (self.min, self.max):
            if isinstance(bound, bool) or not isinstance(bound, Bound | None):
                raise ConfigError(f"a range bound must be a number, date or text, not {bound!r}.")
        if self.min is None and self.max is None:
            raise ConfigError("a range needs `min:`, `max:` or both.")
        if self.min is not None and self.max is not None and _greater(self.min, self.max):
            raise ConfigError(
                f"range min {self.min!r} is greater than max {self.max!r}; swap them."
            )


@dataclass(frozen=True, slots=True)
class OneOf:
    """The value is one of ``values``."""

    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))
        if not self.values or any(v is None or isinstance(v, list | dict) for v in self.values):
            raise ConfigError(
                f"`in:` needs a list of one or more plain values, not {list(self.values)!r}."
            )


@dataclass(frozen=True, slots=True)
class Matches:
    """The text contains a match of ``pattern`` (RE2 syntax; anchor with ``^...$``)."""

    pattern: str

    def __post_init__(self) -> None:
        con = _engine.cursor()
        try:
            re.compile(self.pattern)
            con.execute("SELECT regexp_matches('', $p)", {"p": self.pattern}).fetchall()
        except (re.error, duckdb.Error, TypeError) as exc:
            raise ConfigError(
                f"regex {self.pattern!r} does not compile ({exc}); write an RE2 pattern such "
                "as '^[^@]+@[^@]+$' (no look-around or back-references)."
            ) from None
        finally:
            con.close()


@dataclass(frozen=True, slots=True)
class Length:
    """The text has between ``min`` and ``max`` characters, both inclusive."""

    min: int | None = None
    max: int | None = None

    def __post_init__(self) -> None:
        for bound in (self.min, self.max):
            if bound is not None and (not isinstance(bound, int) or isinstance(bound, bool)
                                      or bound < 0):
                raise ConfigError(f"a length must be a whole number >= 0, not {bound!r}.")
        if self.min is None and self.max is None:
            raise ConfigError("a length check needs `min_length:`, `max_length:` or both.")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ConfigError(
                f"min_length {self.min} is greater than max_length {self.max}; swap them."
            )


ColumnCheck: TypeAlias = Range | OneOf | Matches | Length


@dataclass(frozen=True, slots=True)
class Column:
    """A declared column: its type (``mendflow._sql`` names), nullability and checks."""

    type: str
    _: KW_ONLY
    nullable: bool = True
    checks: tuple[ColumnCheck, ...] = ()
    on_error: OnError = "dead_letter"

    def __post_init__(self) -> None:
        sql_type(self.type)
        object.__setattr__(self, "checks", tuple(self.checks))
        if self.on_error not in ON_ERROR:
            raise ConfigError(
                f"unknown on_error {self.on_error!r}; use one of: {', '.join(ON_ERROR)}."
            )
        if not isinstance(self.nullable, bool):
            raise ConfigError(f"nullable must be true or false, not {self.nullable!r}.")

    @property
    def sql_type(self) -> str:
        """The column's DuckDB type."""
        return sql_type(self.type)


@dataclass(frozen=True, slots=True)
class Expr:
    """A custom check: ``sql`` is a DuckDB boolean expression over the row; false = invalid."""

    name: str
    sql: str

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError(f"an expression needs a `name:`, not {self.name!r}.")
        try:
            statements = duckdb.extract_statements(f"SELECT ({self.sql})")
        except (duckdb.Error, TypeError) as exc:
            raise ConfigError(
                f"expression {self.name!r}: {self.sql!r} is not SQL ({exc}); write one boolean "
                "expression such as 'total = amount * qty'."
            ) from None
        if len(statements) != 1:
            raise ConfigError(
                f"expression {self.name!r}: {self.sql!r} is not one expression; drop the ';'."
            )


@dataclass(frozen=True, slots=True)
class Contract:
    """Columns with their types and checks, plus keys unique within a batch and expressions."""

    columns: Mapping[str, Column] = field(default_factory=dict)
    _: KW_ONLY
    unique: tuple[str, ...] = ()
    expressions: tuple[Expr, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", dict(self.columns))
        unique = (self.unique,) if isinstance(self.unique, str) else tuple(self.unique)
        object.__setattr__(self, "unique", unique)
        object.__setattr__(self, "expressions", tuple(self.expressions))

    @classmethod
    def of_types(cls, types: Mapping[str, str]) -> Contract:
        """A contract of types only (a pipeline's ``columns:`` shorthand)."""
        return cls({name: Column(kind) for name, kind in types.items()})

    @classmethod
    def from_spec(cls, spec: Any, where: str = "contract") -> Contract:
        """Build a contract from its YAML mapping; see ``mendflow.contracts._spec``."""
        from mendflow.contracts._spec import contract_from_spec

        return contract_from_spec(spec, where)

    def to_spec(self) -> dict[str, Any]:
        """The YAML mapping that ``from_spec`` reads back as this contract."""
        from mendflow.contracts._spec import contract_to_spec

        return contract_to_spec(self)

    def merged(self, other: Contract) -> Contract:
        """This contract with ``other``'s columns, keys and expressions added (``other`` wins)."""
        return Contract(
            {**self.columns, **other.columns},
            unique=self.unique or other.unique,
            expressions=self.expressions + other.expressions,
        )


def _greater(low: Bound, high: Bound) -> bool:
    try:
        return bool(low > high)  # type: ignore[operator]
    except TypeError:
        raise ConfigError(
            f"range min {low!r} and max {high!r} are not comparable; give both as numbers, "
            "dates or text."
        ) from None
