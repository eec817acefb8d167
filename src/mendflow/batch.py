"""The values that move through a pipeline: batches read, and loads written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

#: A source's position, JSON-ready. The sink commits it with the data; the source resumes from it.
Position = dict[str, Any]

#: How a batch meets the rows already in the table.
WriteMode = Literal["append", "merge", "replace"]
WRITE_MODES: tuple[WriteMode, ...] = ("append", "merge", "replace")

#: Schema of the dead letters a load carries: the row's index in its batch, the stage that set it
#: aside, why, and the original record as JSON text.
DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("row_index", pa.int64()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("record", pa.string()),
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


@dataclass(frozen=True, slots=True)
class Load:
    """What a sink commits in one transaction: rows, dead letters and the new position."""

    pipeline: str
    run_id: str
    batch_id: str
    data: pa.Table
    position: Position
    dead_letters: pa.Table = field(default_factory=no_dead_letters)
    mode: WriteMode = "append"
    primary_key: tuple[str, ...] = ()
