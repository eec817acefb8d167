"""What a destination's schema step hands back, whatever the database: the batch as it goes in,
the rows set aside, the table's columns after, and what changed (``Drift``), with the events that
report it after the commit and the quarantine of a batch that does not fit a frozen table.

The SQL lives in each destination's own module (``_duckdb_schema``, ``_pg_schema``); the diff and
the policy's plan in ``mendflow.contracts.schema``; the value checks in ``_duckdb_fit``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mendflow.batch import Load, no_dead_letters
from mendflow.contracts.schema import Change, Column, Version
from mendflow.events import BatchQuarantined, SchemaChanged, emit_in_run
from mendflow.sinks import _duckdb_fit as _fit

__all__ = ["Columns", "Drift", "Reconciled", "quarantine", "report", "version_of"]

#: A table's columns, in order, with their types.
Columns = tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Drift:
    """What a batch changed or met, reported after the commit: the table's ``version`` after it,
    the ``changes``, and the rows of a quarantined batch with the reason."""

    table: str
    version: int
    changes: tuple[Change, ...] = ()
    quarantined: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Reconciled:
    """The batch as it goes into the table, rows set aside, the table's columns after, and what
    changed (None: nothing to report)."""

    data: pa.Table
    columns: Columns
    dead_letters: pa.Table = field(default_factory=no_dead_letters)
    changes: Drift | None = None


def report(load: Load, changes: Drift) -> None:
    """Emit what changed (``schema.changed``) and a quarantine (``batch.quarantined``)."""
    if changes.changes:
        emit_in_run(
            SchemaChanged, batch_id=load.batch_id, table=changes.table, version=changes.version,
            changes=tuple(c.as_dict() for c in changes.changes),
        )
    if changes.quarantined:
        emit_in_run(
            BatchQuarantined, batch_id=load.batch_id, rows=changes.quarantined,
            reason=changes.reason, error_type="SchemaMismatch",
        )


def quarantine(
    load: Load, table: str, columns: Columns, split: pa.Table, version: int
) -> Reconciled:
    """Every row of the batch to the dead-letter store: a value does not fit a frozen table
    (``split`` is ``_duckdb_fit.split``'s verdict, with every row's record)."""
    broken = split.filter(split["broken"])
    summary = (
        f"batch quarantined: table {table}'s schema is frozen and {broken.num_rows} of the "
        f"batch's {split.num_rows} rows do not fit it"
    )
    first = f"{summary}; first: {broken['reason'][0].as_py()}"
    own = split["reason"]
    reason = pc.if_else(
        pc.is_null(own), first, pc.binary_join_element_wise(summary, own, "; this row: ")
    )
    checks = json.dumps([{"check": "schema_type", "column": None, "message": first}])
    shaped = split.set_column(2, "reason", reason).set_column(
        3, "checks", pc.if_else(pc.is_null(split["checks"]), checks, split["checks"])
    )
    dead = _fit.dead(pa.array(np.arange(split.num_rows, dtype=np.int64)), shaped, "quarantine")
    names = {c.name for c in columns}
    empty = load.data.select([n for n in load.data.column_names if n in names]).slice(0, 0)
    drift = Drift(table, version, (), split.num_rows, summary)
    return Reconciled(empty, columns, dead, drift)


def version_of(table: str, row: Sequence[Any]) -> Version:
    """A ``Version`` from a row of ``_mendflow_schema_versions``: version, pipeline, run id,
    batch id, epoch microseconds, columns JSON, changes JSON."""
    v, p, r, b, at, cols, changes = row
    return Version(
        table=table, version=int(v), pipeline=p, run_id=r, batch_id=b,
        at=dt.datetime.fromtimestamp(int(at) / 1e6, dt.UTC).isoformat(),
        columns=tuple(Column(n, t) for n, t in json.loads(cols).items()),
        changes=tuple(
            Change(c["change"], c["column"], c["from"], c["to"]) for c in json.loads(changes)
        ),
    )
