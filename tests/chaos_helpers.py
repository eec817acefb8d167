"""Helpers of the chaos tests: the drops and pipeline files, a fake sink, a broken sink."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mendflow.batch import Committed, Load, Position
from mendflow.typing import Sink
from tests.conftest import write_orders, write_pipeline

ROWS, BATCH = 600, 200  # three files: nine batches


def write_drops(folder: Path) -> Path:
    """Three files of 600 orders with distinct ids, a few amounts malformed in each."""
    folder.mkdir(parents=True)
    for n in range(3):
        write_orders(folder / f"orders-{n}.jsonl", start=n * ROWS + 1, count=ROWS, seed=n,
                     bad_every=97)
    return folder


def pipeline_file(folder: Path, drops: Path, destination: dict[str, Any]) -> Path:
    """A merge pipeline over ``drops`` into ``destination``, written in ``folder``."""
    return write_pipeline(
        folder / "pipeline.yaml", name="chaos_orders",
        source={"type": "files", "path": str(drops / "*.jsonl"), "batch_size": BATCH},
        destination=destination, write_mode="merge", primary_key=["id"],
        columns={"amount": "double", "updated_at": "timestamptz"},
    )


class ListSink:
    """A sink in memory: it keeps every load it commits and the last position."""

    name = "list-sink"

    def __init__(self) -> None:
        self.loads: list[Load] = []
        self.committed: Position = {}

    def position(self, pipeline: str, *, mode: str = "append") -> Position:
        return self.committed

    def write(self, load: Load, *, on_staged: Callable[[], None] = lambda: None) -> Committed:
        on_staged()
        self.loads.append(load)
        self.committed = load.position or {}
        return Committed(load.data.num_rows, load.dead_letters.num_rows)

    def finish(self, pipeline: str, *, mode: str = "append") -> None:
        pass

    def close(self) -> None:
        pass


class _DropsThird:
    """Says it committed the third batch it is given, but writes nothing of it."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self.name: str = inner.name
        self.writes = 0

    def position(self, pipeline: str, *, mode: str = "append") -> Position:
        return self.inner.position(pipeline, mode=mode)

    def write(self, load: Load, *, on_staged: Callable[[], None] = lambda: None
              ) -> Committed | None:
        self.writes += 1
        if self.writes == 3:
            return Committed(load.data.num_rows, load.dead_letters.num_rows)
        return self.inner.write(load, on_staged=on_staged)

    def finish(self, pipeline: str, *, mode: str = "append") -> None:
        self.inner.finish(pipeline, mode=mode)

    def close(self) -> None:
        self.inner.close()


def drops_third_batch(sink: Sink) -> Sink:
    """The broken sink wrapper ``mendflow chaos --wrap-sink`` loads in the checker's test."""
    return _DropsThird(sink)
