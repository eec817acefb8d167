"""The values that move through a pipeline: batches read, and loads written."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

#: A source's position, JSON-ready. The sink commits it with the data; the source resumes from it.
Position = dict[str, Any]

#: How a batch meets the rows already in the table.
WriteMode = Literal["append", "merge", "replace"]
WRITE_MODES: tuple[WriteMode, ...] = ("append", "merge", "replace")

#: What a schema change meets at the destination (see ``mendflow.contracts.schema``).
SchemaPolicy = Literal["evolve", "freeze", "discard_columns"]
SCHEMA_POLICIES: tuple[SchemaPolicy, ...] = ("evolve", "freeze", "discard_columns")

#: Where a record was set aside.
Stage = Literal["parse", "coerce", "validate", "transform", "load", "audit", "quarantine"]

#: Schema of the dead letters a load carries:
#:
#: - ``row_index``: the record's index in its batch (for ``parse``: in the source's chunk);
#: - ``stage``: where it was set aside (``Stage``);
#: - ``reason``: every failed check in one line, for people;
#: - ``checks``: the same as a JSON list of ``{"check", "column", "message"}``, for filters;
#: - ``record``: the original record, byte-exact when the source kept its bytes (a JSON line, a
#:   CSV line), else the parsed record as a JSON object;
#: - ``format``: how ``record`` is written: ``json`` (an object), ``csv`` (a line) or ``bytes``
#:   (not even text); replay parses ``json`` records.
DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("row_index", pa.int64()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("checks", pa.string()),
        ("record", pa.binary()),
        ("format", pa.string()),
    ]
)


def no_dead_letters() -> pa.Table:
    """An empty dead-letter table."""
    return DEAD_LETTER_SCHEMA.empty_table()


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows read from a source.

    ``id`` is derived from the source position alone (file and row offset, request and page), so a
    batch read twice has the same id. ``position`` is where the source stands after this batch.
    """

    id: str
    data: pa.Table
    position: Position
    source: str = ""
    #: Records the source read but could not parse (stage ``parse``), as dead letters.
    rejects: pa.Table = field(default_factory=no_dead_letters)
    #: The original bytes of each row of ``data`` (same order), when the source kept them.
    raw: pa.Array | None = None

    @property
    def records(self) -> int:
        """Every record read: the rows parsed and the rows that did not parse."""
        return int(self.data.num_rows + self.rejects.num_rows)


@dataclass(frozen=True, slots=True)
class Load:
    """What a sink commits in one transaction: rows, dead letters and the new position."""

    pipeline: str
    run_id: str
    batch_id: str
    data: pa.Table
    #: The position to commit with the batch; None leaves the checkpoint as it is (a replay).
    position: Position | None
    dead_letters: pa.Table = field(default_factory=no_dead_letters)
    mode: WriteMode = "append"
    primary_key: tuple[str, ...] = ()
    #: Records the batch was read with (rows + dead letters when nothing was lost); -1: unknown.
    records: int = -1
    schema: SchemaPolicy = "evolve"
    #: Audits run inside the load transaction before commit (``mendflow.checks``).
    checks: tuple[Any, ...] = ()
    #: For a replay: the dead-letter id of each row of the replayed batch, in order. Loaded ones
    #: leave the dead-letter store in this transaction; the others stay with attempts raised.
    replay_ids: tuple[int, ...] = ()

    @property
    def records_read(self) -> int:
        """Records in, for reconciliation: ``records`` if set, else rows + dead letters."""
        if self.records >= 0:
            return self.records
        return int(self.data.num_rows + self.dead_letters.num_rows)


@dataclass(frozen=True, slots=True)
class Committed:
    """What a sink committed for a load: rows in the table, rows in the dead-letter store
    (the load's own, and any the destination set aside, e.g. for schema drift)."""

    rows: int
    dead_letters: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Audit:
    """What a check sees of a batch inside its load transaction, before commit.

    ``history`` holds the row counts of the pipeline's earlier committed batches, oldest first.
    ``duplicate_keys(columns)`` counts keys of this batch held by more than one row of the
    destination table once the batch is in it.
    """

    pipeline: str
    batch_id: str
    table: str
    records_read: int
    rows_loaded: int
    dead_letters: int
    data: pa.Table
    history: Sequence[int]
    now: float
    duplicate_keys: Callable[[Sequence[str]], int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """A check's verdict on one batch."""

    check: str
    blocking: bool
    passed: bool
    message: str = ""
