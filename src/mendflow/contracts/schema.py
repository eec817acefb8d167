"""Schema drift, without a dialect: what differs between a batch and its table, and what a
policy does about it.

Types are SQL type names in their canonical spelling (``BIGINT``, ``DECIMAL(12,2)``,
``TIMESTAMPTZ``, ``VARCHAR``...); a destination translates its own spelling to these.

**Widening lattice** (``fits(a, b)``: every value of type ``a`` is exactly a value of ``b``):

- integers by range: ``TINYINT < SMALLINT < INTEGER < BIGINT < HUGEINT``, unsigned ones into
  the next signed one up (``UINTEGER < BIGINT``);
- integers into floats only while the float's mantissa holds them: up to ``SMALLINT`` into
  ``FLOAT``, up to ``INTEGER`` into ``DOUBLE``; ``BIGINT`` into ``DOUBLE`` is *not* lossless
  (beyond 2^53 it rounds); ``FLOAT < DOUBLE``;
- integers and decimals into a decimal with as many integer digits and as many decimals;
  decimals never into floats (``0.1`` has no exact double);
- ``DATE < TIMESTAMP_S < TIMESTAMP_MS < TIMESTAMP`` (``TIMESTAMP_NS`` and ``TIMESTAMPTZ`` only
  into themselves: range, and a time zone, would have to be invented);
- every scalar except ``BLOB`` into ``VARCHAR`` (its text is exact), but a column is never
  *widened* to ``VARCHAR``: a number column turning into text would break every reader's
  arithmetic, so a text value in a typed column is checked value by value instead.

**Held widening**: an integer column meeting floats (``BIGINT`` and ``DOUBLE``, common when
each file's types are inferred) has no lossless common type in general, but it has one for the
values the table holds: if every one of them survives the round trip through ``DOUBLE`` (all
within 2^53, checked by one aggregate over the column in the load's transaction), ``evolve``
widens the column to ``DOUBLE``; otherwise the narrowing rule applies.

**Narrowing rule**: when the batch's type does not fit the table's and no lossless common
type exists (``BIGINT`` beyond 2^53 and ``DOUBLE``, ``DECIMAL(12,2)`` and ``DOUBLE``, text),
nothing is converted on trust: each value must survive the round trip into the table's type
and back unchanged (``3.7`` into ``BIGINT`` does not, ``4.0`` does); those that do not are
never rounded or truncated: their rows go to the dead-letter store (``evolve``,
``discard_columns``) or the whole batch is quarantined (``freeze``).

**Policies**: ``evolve`` adds columns and widens types; ``freeze`` changes nothing once the
table exists (a row with a value in an unknown column is a dead letter; a batch with a value
that does not fit is quarantined whole); ``discard_columns`` drops unknown columns from the
batch and treats types as ``evolve`` does (it fixes the column *set*, not the types; use
``freeze`` to fix both). Columns the batch lacks load as NULL under every policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from mendflow.batch import SchemaPolicy
from mendflow.contracts._lattice import FLOATS, INTS, NULL, common, fits

__all__ = [
    "NULL", "Change", "Column", "Plan", "Retyped", "SchemaDiff", "Version", "between", "common",
    "diff", "fits", "plan", "settle",
]

#: What a change did: a column added, widened, missing from the batch, dropped from the batch,
#: or a batch type narrower than (or foreign to) the table's, checked value by value.
ChangeKind = Literal["added", "widened", "removed", "discarded", "narrowed"]


@dataclass(frozen=True, slots=True)
class Column:
    """A column: its name and canonical SQL type."""

    name: str
    type: str


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between a batch and its table (``before``/``after``: types, or None)."""

    change: ChangeKind
    column: str
    before: str | None = None
    after: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """JSON-ready form: ``{"change", "column", "from", "to"}``."""
        return {"change": self.change, "column": self.column, "from": self.before,
                "to": self.after}


@dataclass(frozen=True, slots=True)
class Retyped:
    """A batch column whose type does not fit its table column's; ``wider`` is the narrowest
    type both fit losslessly (None: there is none)."""

    column: str
    table: str
    batch: str
    wider: str | None
    #: A type both fit if the table's values do (integers meeting floats: ``DOUBLE``).
    held: str | None = None

    @property
    def widening(self) -> Change:
        """The table column grown to the common type."""
        return Change("widened", self.column, self.table, self.wider)

    @property
    def narrowing(self) -> Change:
        """The batch's values going into the table's type, checked one by one."""
        return Change("narrowed", self.column, self.batch, self.table)


@dataclass(frozen=True, slots=True)
class SchemaDiff:
    """How a batch differs from its table: columns added (batch has, table lacks), removed
    (table has, batch lacks) and retyped (the batch's type does not fit the table's)."""

    added: tuple[Column, ...] = ()
    removed: tuple[Column, ...] = ()
    retyped: tuple[Retyped, ...] = ()

    @property
    def widened(self) -> tuple[Change, ...]:
        """Type changes a lossless common type absorbs."""
        return tuple(r.widening for r in self.retyped if r.wider is not None)

    @property
    def narrowed(self) -> tuple[Change, ...]:
        """Type changes no lossless type absorbs: the values must be checked."""
        return tuple(r.narrowing for r in self.retyped if r.wider is None)


@dataclass(frozen=True, slots=True)
class Version:
    """One version of a table's schema: its columns, and the changes from the version before
    (made by ``pipeline`` with batch ``batch_id`` of run ``run_id`` at ``at``, ISO 8601)."""

    table: str
    version: int
    pipeline: str
    run_id: str
    batch_id: str
    at: str
    columns: tuple[Column, ...]
    changes: tuple[Change, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: columns as ``{name: type}`` in order, changes as dicts."""
        return {
            "table": self.table, "version": self.version, "pipeline": self.pipeline,
            "run_id": self.run_id, "batch_id": self.batch_id, "at": self.at,
            "columns": {c.name: c.type for c in self.columns},
            "changes": [c.as_dict() for c in self.changes],
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """What a policy does with a diff.

    ``add`` and ``widen`` are DDL (a new table version); ``discard`` drops batch columns;
    ``reject`` names unknown columns whose non-null values make their row a dead letter;
    ``check`` lists columns whose values must round-trip into the table's type; with
    ``quarantine`` a value that does not sends the whole batch to the dead-letter store.
    """

    add: tuple[Column, ...] = ()
    widen: tuple[Change, ...] = ()
    discard: tuple[str, ...] = ()
    reject: tuple[str, ...] = ()
    check: tuple[Change, ...] = ()
    quarantine: bool = False
    removed: tuple[Column, ...] = ()

    @property
    def ddl(self) -> tuple[Change, ...]:
        """The changes that make a new table version."""
        added = tuple(Change("added", c.name, None, c.type) for c in self.add)
        return added + self.widen

    @property
    def changes(self) -> tuple[Change, ...]:
        """Every change to report: the new version's, then those that changed no table."""
        gone = tuple(Change("removed", c.name, c.type, None) for c in self.removed)
        dropped = tuple(Change("discarded", name) for name in self.discard)
        return self.ddl + gone + dropped + self.check

    def columns(self, table: Sequence[Column]) -> tuple[Column, ...]:
        """The table's columns once the plan's DDL has run."""
        to = {c.column: c.after or "" for c in self.widen}
        return tuple(Column(c.name, to.get(c.name, c.type)) for c in table) + self.add


def diff(table: Sequence[Column], batch: Sequence[Column]) -> SchemaDiff:
    """Compare a batch's columns with its table's (columns of an all-null batch type are
    ignored when the table lacks them: they would add a column of no known type)."""
    have = {c.name: c.type for c in table}
    given = {c.name for c in batch}
    return SchemaDiff(
        added=tuple(c for c in batch if c.name not in have and c.type != NULL),
        removed=tuple(c for c in table if c.name not in given),
        retyped=tuple(
            _retyped(c.name, have[c.name], c.type)
            for c in batch
            if c.name in have and not fits(c.type, have[c.name])
        ),
    )


def _retyped(column: str, table: str, batch: str) -> Retyped:
    wider = common(table, batch)
    held = "DOUBLE" if wider is None and table in INTS and batch in FLOATS else None
    return Retyped(column, table, batch, wider, held)


def settle(change: SchemaDiff, held: Iterable[str]) -> SchemaDiff:
    """``change`` with the held widening of the columns named in ``held`` taken: the caller
    found that every value the table holds in them survives the round trip."""
    names = set(held)
    return replace(change, retyped=tuple(
        replace(r, wider=r.held) if r.column in names and r.held else r for r in change.retyped
    ))


def plan(change: SchemaDiff, policy: SchemaPolicy) -> Plan:
    """What ``policy`` does with ``change`` (see the module's docstring)."""
    unknown = tuple(c.name for c in change.added)
    if policy == "freeze":
        checked = tuple(r.narrowing for r in change.retyped)
        return Plan(reject=unknown, check=checked, quarantine=True, removed=change.removed)
    if policy == "discard_columns":
        return Plan(widen=change.widened, discard=unknown, check=change.narrowed,
                    removed=change.removed)
    return Plan(add=change.added, widen=change.widened, check=change.narrowed,
                removed=change.removed)


def between(before: Sequence[Column], after: Sequence[Column]) -> tuple[Change, ...]:
    """The changes from one version of a table's columns to the next."""
    old = {c.name: c.type for c in before}
    new = {c.name for c in after}
    added = tuple(Change("added", c.name, None, c.type) for c in after if c.name not in old)
    retyped = tuple(
        Change("widened" if fits(old[c.name], c.type) else "narrowed", c.name, old[c.name], c.type)
        for c in after
        if c.name in old and old[c.name] != c.type
    )
    removed = tuple(Change("removed", c.name, c.type, None) for c in before if c.name not in new)
    return added + retyped + removed
