"""Snapshots of a source: its last complete extract, as Parquet files, and a source serving it.

A ``SnapshotStore`` records a source's batches during a read and publishes them, with the
source's position after the extract, when the read completes; a ``SnapshotSource`` serves the
published snapshot once. A ``FallbackSource`` takes its primary's snapshots with ``SnapshotTaking``
and serves one only when taken where its primary stands (``source_position``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from mendflow.batch import Batch, Position
from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.exceptions import (
    DestinationError,
    DestinationUnavailable,
    MendflowError,
    SourceUnavailable,
)

__all__ = ["Snapshot", "SnapshotSource", "SnapshotStore", "SnapshotTaking"]

_MANIFEST: Final = "manifest.json"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A published snapshot of a source: when it was taken, its Parquet files with their row
    counts, and the source's position after the extract."""

    source: str
    taken_at: float
    parts: tuple[tuple[str, int], ...]
    position: Position | None = None

    @property
    def rows(self) -> int:
        return sum(rows for _, rows in self.parts)


@dataclass(slots=True)
class _Pending:
    token: str
    parts: list[tuple[str, int]] = field(default_factory=list)


class SnapshotStore:
    """The last good extract of each source, as Parquet files under ``folder``.

    ``record`` appends a batch to the snapshot in progress; ``commit`` publishes it atomically:
    the files are fsynced, then a small manifest naming them is written to a temporary file and
    moved over ``manifest.json`` with ``os.replace``; files no longer named are deleted after.
    Until then, readers see the previous snapshot, also after a crash. One writer per source name.
    """

    def __init__(self, folder: str | os.PathLike[str], *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.folder = Path(folder)
        self.clock = clock
        self._pending: dict[str, _Pending] = {}

    def record(self, source_name: str, batch: Batch) -> None:
        """Add ``batch``'s rows to the snapshot of ``source_name`` in progress."""
        if batch.data.num_rows == 0:
            return
        pending = self._pending.setdefault(source_name, _Pending(uuid.uuid4().hex[:12]))
        folder = self._folder(source_name)
        file = f"part-{pending.token}-{len(pending.parts):05d}.parquet"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / file).open("wb") as out:
                pq.write_table(batch.data, out)
                out.flush()
                os.fsync(out.fileno())
        except (OSError, pa.ArrowException) as exc:
            raise _unwritable(folder, exc) from exc
        pending.parts.append((file, batch.data.num_rows))

    def commit(
        self, source_name: str, *, position: Position | None = None, taken_at: float | None = None
    ) -> Snapshot:
        """Publish the snapshot in progress (empty if nothing was recorded) in place of the last."""
        pending = self._pending.pop(source_name, None) or _Pending("")
        when = self.clock.now() if taken_at is None else taken_at
        snapshot = Snapshot(source_name, when, tuple(pending.parts), position)
        folder = self._folder(source_name)
        manifest = asdict(snapshot)  # source, taken_at, parts, position
        temporary = folder / f".manifest-{uuid.uuid4().hex[:12]}.tmp"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _fsync_folder(folder)  # the parts' directory entries, before the manifest names them
            with temporary.open("w", encoding="utf-8") as out:
                json.dump(manifest, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, folder / _MANIFEST)
            _fsync_folder(folder)
        except OSError as exc:
            _remove(folder, [temporary.name, *(file for file, _ in pending.parts)])
            raise _unwritable(folder, exc) from exc
        _remove(folder, _unnamed(folder, snapshot))
        return snapshot

    def discard(self, source_name: str) -> None:
        """Drop the snapshot in progress; the published one stays."""
        pending = self._pending.pop(source_name, None)
        if pending is not None:
            _remove(self._folder(source_name), [file for file, _ in pending.parts])

    def latest(self, source_name: str) -> Snapshot | None:
        """The published snapshot of ``source_name``; None when there is none yet."""
        path = self._folder(source_name) / _MANIFEST
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            parts = tuple((str(file), int(rows)) for file, rows in raw["parts"])
            return Snapshot(source_name, float(raw["taken_at"]), parts, raw.get("position"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SourceUnavailable(
                f"snapshot manifest {path} cannot be read ({exc}); delete its folder to start "
                "over: the next complete read of the source takes a new snapshot.",
                dependency=str(path),
            ) from exc

    def taken_at(self, source_name: str) -> float | None:
        """When the published snapshot of ``source_name`` was taken; None when there is none."""
        snapshot = self.latest(source_name)
        return None if snapshot is None else snapshot.taken_at

    def read(self, source_name: str) -> Iterator[pa.Table]:
        """The rows of the published snapshot of ``source_name``, one table per part."""
        source = SnapshotSource(self, source_name, name=source_name)
        return (batch.data for batch in source.read({}))

    def tables(self, snapshot: Snapshot, *, skip: int = 0) -> Iterator[pa.Table]:
        """The rows of ``snapshot`` after the first ``skip``; parts skipped whole are not read."""
        folder = self._folder(snapshot.source)
        for file, rows in snapshot.parts:
            if skip >= rows:
                skip -= rows
                continue
            try:
                table = pq.read_table(folder / file)
            except (OSError, pa.ArrowException) as exc:
                raise SourceUnavailable(
                    f"snapshot file {folder / file} cannot be read ({exc}); a newer snapshot "
                    "may have replaced it during the read: run again.",
                    dependency=str(folder),
                ) from exc
            yield table.slice(skip)
            skip = 0

    def _folder(self, source_name: str) -> Path:
        return self.folder / _slug(source_name)


class SnapshotSource:
    """Serve the published snapshot of ``source_name`` from a ``SnapshotStore``.

    Position: ``{"taken_at": <when the snapshot read was taken>, "offset": <rows served>}``; a
    snapshot taken at another time is read from its start.
    """

    def __init__(self, store: SnapshotStore, source_name: str, *, name: str = "") -> None:
        self.store = store
        self.source_name = source_name
        self.name = name or f"snapshot:{source_name}"

    def read(
        self, position: Position, *, source_position: Position | None = None
    ) -> Iterator[Batch]:
        """Yield one batch per part of the snapshot, from the row after ``offset``. With a
        ``source_position`` other than {}, only a snapshot taken with its source there serves."""
        snapshot = self.store.latest(self.source_name)
        if snapshot is None:
            raise SourceUnavailable(
                f"no snapshot of {self.source_name!r} in {self.store.folder} yet; one is taken "
                "when a read of that source completes, so run once with it healthy.",
                dependency=self.name,
            )
        if source_position and _canonical(snapshot.position) != _canonical(source_position):
            raise SourceUnavailable(
                f"the snapshot was taken with {snapshot.source!r} at {snapshot.position!r}, not "
                f"at {source_position!r}; it could put older rows back. It serves again once a "
                f"read of {snapshot.source!r} completes.",
                dependency=self.name,
            )
        same = position.get("taken_at") == snapshot.taken_at
        offset = int(position.get("offset", 0)) if same else 0
        for table in self.store.tables(snapshot, skip=offset):
            start, offset = offset, offset + table.num_rows
            yield Batch(
                id=f"{snapshot.taken_at!r}:{start}-{offset}",
                data=table,
                position={"taken_at": snapshot.taken_at, "offset": offset},
                source=self.name,
            )


class SnapshotTaking:
    """The snapshot taken during one read of a source: ``record`` each batch, then ``finish``.
    A store that fails costs only this snapshot (with a warning), never the source's batches."""

    def __init__(self, store: SnapshotStore | None, source_name: str) -> None:
        self.store = store
        self.source_name = source_name

    def record(self, batch: Batch) -> None:
        """Add ``batch`` to the snapshot in progress (nothing without a store)."""
        if self.store is not None:
            try:
                self.store.record(self.source_name, batch)
            except MendflowError as exc:
                self._give_up(self.store, exc)

    def finish(self, *, completed: bool, position: Position, taken_at: float) -> None:
        """Publish the snapshot if the read ``completed`` (ending at ``position``), else drop it."""
        if self.store is not None and not completed:
            self.store.discard(self.source_name)
        elif self.store is not None:
            try:
                self.store.commit(self.source_name, position=position, taken_at=taken_at)
            except MendflowError as exc:
                self._give_up(self.store, exc)

    def _give_up(self, store: SnapshotStore, error: MendflowError) -> None:
        message = f"no snapshot of {self.source_name!r} this time, the last one stays: {error}"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        store.discard(self.source_name)
        self.store = None


def _canonical(position: Position | None) -> str:
    """A position as comparable text: JSON with sorted keys, as a checkpoint stores it."""
    return json.dumps(position, sort_keys=True, default=str)


def _slug(name: str) -> str:
    """A folder name for a source name: readable where it can be, unique by a hash."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:40]
    digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:10]
    return f"{readable}-{digest}" if readable else digest


def _unnamed(folder: Path, snapshot: Snapshot) -> list[str]:
    """Files of earlier or abandoned snapshots: parts the manifest does not name, temporaries."""
    named = {file for file, _ in snapshot.parts}
    parts = [path.name for path in folder.glob("part-*.parquet") if path.name not in named]
    return parts + [path.name for path in folder.glob(".manifest-*.tmp")]


def _remove(folder: Path, files: Iterable[str]) -> None:
    """Delete ``files``; one that cannot be deleted now is deleted by a later commit."""
    for file in files:
        with contextlib.suppress(OSError):
            (folder / file).unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Make the folder's entries durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _unwritable(folder: Path, error: Exception) -> MendflowError:
    """The error for a snapshot that cannot be written: transient for the OS, else permanent."""
    if isinstance(error, OSError):
        return DestinationUnavailable(
            f"cannot write a snapshot in {folder} ({error}); check the disk has space and the "
            "folder is writable.",
            dependency=str(folder),
        )
    return DestinationError(
        f"the rows cannot be stored as Parquet in {folder} ({error}); this source cannot be "
        "snapshot as it is.",
        dependency=str(folder),
    )
