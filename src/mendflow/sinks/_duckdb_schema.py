"""The DuckDB table's schema meets the batch's, inside the load transaction.

Creates the table from the first batch; a batch with columns the table lacks is refused.
(Placeholder: schema drift policies and the version history land here.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from mendflow._sql import ident
from mendflow.batch import Load, no_dead_letters
from mendflow.exceptions import SchemaMismatch

_BATCH = "__mf_shape"

DDL: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reconciled:
    """The batch as it goes into the table, rows set aside, the table's columns after, and the
    schema changes made (None: none)."""

    data: pa.Table
    columns: frozenset[str]
    dead_letters: pa.Table = field(default_factory=no_dead_letters)
    changes: tuple[dict[str, Any], ...] | None = None


def reconcile(
    con: duckdb.DuckDBPyConnection, target: str, load: Load, known: frozenset[str] | None
) -> Reconciled:
    """Create ``target`` from the batch if missing; refuse columns the table lacks."""
    data = load.data
    if known is None:
        rows = con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = ?",
            [target],
        ).fetchall()
        if not rows:
            con.register(_BATCH, data)
            try:
                con.execute(f"CREATE TABLE {ident(target)} AS SELECT * FROM {_BATCH} LIMIT 0")
            finally:
                con.unregister(_BATCH)
            rows = [(name,) for name in data.column_names]
        known = frozenset(r[0] for r in rows)
    extra = [c for c in data.column_names if c not in known]
    if extra:
        raise SchemaMismatch(
            f"the batch has columns that {target} lacks: {', '.join(extra)}. Add them to "
            "the table (ALTER TABLE ... ADD COLUMN) or drop them in a transform.",
            dependency=target,
        )
    return Reconciled(data, known)


def report(load: Load, target: str, changes: tuple[dict[str, Any], ...]) -> None:
    """Emit what changed, after the commit."""
