"""Test seams shipped with mendflow: a fake clock, an in-memory source, event capture."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa

from mendflow.batch import Batch, Position
from mendflow.events import Event


class FakeClock:
    """A clock that only moves when told to; ``sleep`` advances it and records the wait."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self._now += seconds
        self._mono += seconds


class MemorySource:
    """Serve fixed record lists as batches; the position is the index of the next batch."""

    def __init__(self, pages: Sequence[Sequence[dict[str, Any]]], *, name: str = "memory") -> None:
        self.pages = [list(page) for page in pages]
        self.name = name

    def read(self, position: Position) -> Iterator[Batch]:
        start = int(position.get("next", 0))
        for index in range(start, len(self.pages)):
            yield Batch(
                id=f"{self.name}#{index}",
                data=pa.Table.from_pylist(self.pages[index]),
                position={"next": index + 1},
                source=self.name,
            )


class EventLog(list[Event]):
    """The events captured by ``capture_events``; a hook itself."""

    def __call__(self, event: Event) -> None:
        self.append(event)

    def kinds(self) -> list[str]:
        """The kind of each captured event, in order."""
        return [event.kind for event in self]


@contextmanager
def capture_events() -> Iterator[EventLog]:
    """Collect events: pass the yielded log as a hook, then assert on it."""
    yield EventLog()
