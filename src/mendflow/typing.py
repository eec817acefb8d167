"""The interfaces a pipeline is built from. Each is small; implement it to plug in your own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import pyarrow as pa

from mendflow.batch import Audit, Batch, Committed, Finding, Load, Position
from mendflow.events import Event

__all__ = ["Check", "Hook", "Sink", "Source", "Transform"]


@runtime_checkable
class Source(Protocol):
    """Reads batches from a position; an empty position means from the start."""

    name: str

    def read(self, position: Position) -> Iterator[Batch]:
        """Yield batches in order, each carrying the position after it."""
        ...


@runtime_checkable
class Sink(Protocol):
    """Writes a batch and its position in one transaction, and reports the committed position."""

    name: str

    def position(self, pipeline: str, *, mode: str = "append") -> Position:
        """The position committed with the last batch of ``pipeline`` (empty when none)."""
        ...

    def write(self, load: Load, *, on_staged: Callable[[], None] = ...) -> Committed | None:
        """Commit ``load`` atomically and say what went where; None when its batch was already
        committed (nothing loaded)."""
        ...

    def finish(self, pipeline: str, *, mode: str = "append") -> None:
        """End of a run that read everything: publish what a replace load staged."""
        ...

    def close(self) -> None:
        """Release connections; the sink may be used again after."""
        ...


@runtime_checkable
class Check(Protocol):
    """Audits a batch inside its load transaction, before commit (write-audit-publish).

    A failed ``blocking`` check rolls the batch back; a failed warning is only recorded.
    ``name`` and ``blocking`` are read-only, so a frozen dataclass implements this.
    """

    @property
    def name(self) -> str:
        """Names the check in findings, events and errors, e.g. ``unique_key(id)``."""
        ...

    @property
    def blocking(self) -> bool:
        """True: a failure rolls the batch back; False: a failure is only recorded."""
        ...

    def check(self, audit: Audit) -> Finding:
        """Judge the batch."""
        ...


#: A vectorized step between reading and loading: a whole Arrow table in, one out.
Transform = Callable[[pa.Table], pa.Table]

#: A subscriber to the runner's events.
Hook = Callable[[Event], None]
