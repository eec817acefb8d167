"""The checkpoint of a pipeline writing into a Parquet folder: ``_mendflow/<pipeline>.json``.

One JSON file per pipeline, replaced atomically after each batch's files::

    {"format": 1, "pipeline": "orders",
     "committed": {"position": {...}, "batches": [["<digest>", rows], ...]},
     "staged": null | {"position": {...}, "batches": [...], "generation": "<id>"}}

``batches`` is the manifest: the digest (``_parquet_files.digest``) and row count of every
batch committed, in order; a batch found there is skipped (exactly once), and the audit's volume
history is read from it. It grows by about 30 bytes a batch. ``staged`` is a replace run in
progress: its position, its batches, and the generation written in ``_staging/.generation``,
which tells after a crash whether ``finish`` swapped the folders already. A pipeline's calls
hold an exclusive lock (``_mendflow/<pipeline>.lock``), so two processes never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mendflow.batch import Position
from mendflow.exceptions import DestinationError, DestinationUnavailable
from mendflow.sinks import _parquet_files as _files

__all__ = ["FORMAT", "Slot", "State", "load", "locked", "save"]

FORMAT = 1
_SAFE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True, slots=True)
class Slot:
    """A position with the batches committed up to it (digest, rows), oldest first."""

    position: Position = field(default_factory=dict)
    batches: tuple[tuple[str, int], ...] = ()
    generation: str = ""

    def has(self, digest: str) -> bool:
        """Whether the batch of ``digest`` is committed in this slot."""
        return any(seen == digest for seen, _ in self.batches)

    def add(self, digest: str, rows: int, position: Position | None) -> Slot:
        """This slot with one more batch (and its position, unless None: a replay)."""
        moved = self.position if position is None else position
        return replace(self, position=moved, batches=(*self.batches, (digest, rows)))


@dataclass(frozen=True, slots=True)
class State:
    """What a pipeline committed, and the replace run it has staged (None: none)."""

    committed: Slot = field(default_factory=Slot)
    staged: Slot | None = None


def load(root: Path, pipeline: str) -> State:
    """The pipeline's state (empty when it never committed)."""
    path = _path(root, pipeline)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return State()
    except ValueError as exc:  # written atomically, so only a hand edit gets here
        raise DestinationError(
            f"the checkpoint {path} is not valid JSON ({exc}); restore it, or delete it to "
            "load everything again.", dependency=str(root)) from exc
    staged = spec.get("staged")
    return State(_slot(spec["committed"]), None if staged is None else _slot(staged))


def save(root: Path, pipeline: str, state: State) -> None:
    """Replace the pipeline's checkpoint file atomically and durably."""
    spec = {"format": FORMAT, "pipeline": pipeline, "committed": _spec(state.committed),
            "staged": None if state.staged is None else _spec(state.staged)}
    _files.write_json(_path(root, pipeline), json.dumps(spec, sort_keys=True),
                      _files.tag(pipeline))


@contextlib.contextmanager
def locked(root: Path, pipeline: str) -> Iterator[None]:
    """Hold the pipeline's lock on the folder; another process holding it is a transient
    ``DestinationUnavailable`` (the call is retried)."""
    path = _path(root, pipeline).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise DestinationUnavailable(
                f"another process is writing pipeline {pipeline} into {root}; it is retried "
                "once that one is done.", dependency=str(root)) from exc
        yield
    finally:
        os.close(fd)  # releases the lock


def _path(root: Path, pipeline: str) -> Path:
    name = pipeline if _SAFE.fullmatch(pipeline) else (
        f"{re.sub(r'[^A-Za-z0-9_-]+', '_', pipeline)[:60]}-{_files.tag(pipeline)}")
    return root / "_mendflow" / f"{name}.json"


def _slot(spec: dict[str, Any]) -> Slot:
    return Slot(dict(spec["position"]), tuple((str(d), int(n)) for d, n in spec["batches"]),
                str(spec.get("generation", "")))


def _spec(slot: Slot) -> dict[str, Any]:
    spec: dict[str, Any] = {"position": slot.position, "batches": [list(b) for b in slot.batches]}
    if slot.generation:
        spec["generation"] = slot.generation
    return spec
