"""Fallback tiers for a source: the primary, then secondaries, then the last good snapshot.

    FallbackSource(
        HttpSource(orders_url, ..., name="primary"),
        HttpSource(replica_url, ..., name="secondary"),
        snapshots=SnapshotStore(".mendflow/snapshots"),
    )

A read tries the tiers in order. A tier that raises a ``TransientError`` (after its own retries:
``SourceUnavailable``, ``RateLimited``, ``DependencyDown``...) before it yielded a batch is
skipped for the next one. A ``PermanentError`` is no reason to fall back: it propagates, and so
does any error raised after a tier's first batch. When every tier fails, the primary's error is
raised, with a note naming each other tier's error.

Every batch tells who served it: ``provenance(batch)`` (also the ``b"mendflow.provenance"`` JSON
of ``batch.data``'s schema metadata) is ``{"tier": name, "tier_index": i, "stale_s": s}``, where
``s`` is the age of the snapshot served (0 for live tiers); ``batch.source`` is the tier's name and
``batch.id`` is the tier's own id prefixed with its name. The position keeps one per tier::

    {"tiers": {<tier name>: <that tier's own position>},
     "fallback": None | {"since": <primary position when the primary failed>, "tier": <name>}}

While a fallback serves, the primary's position stays where it failed (``fallback.since``). The
first read that finds the primary healthy reads it again from ``fallback.since``, so with a merge
on a primary key the rows a fallback served are overwritten with the primary's; ``fallback`` is
cleared with that read's first batch. A position that is not of this shape (the checkpoint of a
pipeline whose source was the primary alone) is taken as the primary's.

The re-read covers what the primary has after ``fallback.since``. A fallback whose own position is
behind that point (first used long after the primary started, or lagging it) serves older rows
too, and those keep the fallback's values until the primary sends them again.

With ``snapshots``, the primary's batches are recorded as they are read, and the snapshot is
published when the primary's read completes: a snapshot is the last *complete* extract of the
primary (for an incremental primary, the rows of its last read). Served as the last tier, it is
read once per snapshot taken; a newer snapshot is read from its start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import uuid
import warnings
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from mendflow.batch import Batch, Position
from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.exceptions import (
    ConfigError,
    DestinationError,
    DestinationUnavailable,
    MendflowError,
    SourceUnavailable,
    TransientError,
)
from mendflow.typing import Source

__all__ = [
    "PROVENANCE_KEY",
    "FallbackSource",
    "Snapshot",
    "SnapshotSource",
    "SnapshotStore",
    "provenance",
]

#: The schema metadata key of ``batch.data`` that holds a batch's provenance as JSON.
PROVENANCE_KEY: Final = b"mendflow.provenance"
_MANIFEST: Final = "manifest.json"


def provenance(batch: Batch | pa.Table) -> dict[str, Any]:
    """Which tier served ``batch`` and how stale it is; {} when no FallbackSource served it."""
    data = batch.data if isinstance(batch, Batch) else batch
    raw = (data.schema.metadata or {}).get(PROVENANCE_KEY)
    if raw is None:
        return {}
    facts: dict[str, Any] = json.loads(raw)
    return facts


class FallbackSource:
    """Read the first tier that answers: the primary, each fallback, then the last snapshot."""

    def __init__(
        self,
        primary: Source,
        *fallbacks: Source,
        snapshots: SnapshotStore | None = None,
        name: str = "",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.primary = primary
        self.fallbacks = fallbacks
        self.snapshots = snapshots
        self.clock = clock
        self.name = name or f"fallback:{primary.name}"
        last = () if snapshots is None else (SnapshotSource(snapshots, primary.name),)
        self.tiers: tuple[Source, ...] = (primary, *fallbacks, *last)
        _check_names(self.tiers)

    def read(self, position: Position) -> Iterator[Batch]:
        """Yield the batches of the first tier that does not fail transiently before its first."""
        state = _State.parse(position, self.primary.name)
        failures: list[TransientError] = []
        for index in range(len(self.tiers)):
            batches = self._primary(state) if index == 0 else self._fallback(index, state)
            try:
                first = next(batches, None)
            except TransientError as exc:
                failures.append(exc)
                continue
            except MendflowError as exc:
                _note_failures(exc, failures, self.tiers)
                raise
            try:
                if first is not None:
                    yield first
                    yield from batches
            finally:
                batches.close()
            return
        _note_failures(failures[0], failures[1:], self.tiers[1:])
        raise failures[0]

    def reading_as_text(self, columns: Iterable[str]) -> FallbackSource:
        """A copy whose tiers read ``columns`` as raw text, where they can."""
        wanted = tuple(columns)

        def as_text(source: Source) -> Source:
            method = getattr(source, "reading_as_text", None)
            return method(wanted) if callable(method) else source

        return FallbackSource(
            as_text(self.primary),
            *(as_text(source) for source in self.fallbacks),
            snapshots=self.snapshots,
            name=self.name,
            clock=self.clock,
        )

    def _primary(self, state: _State) -> Generator[Batch, None, None]:
        """The primary's batches, from ``fallback.since`` after a fallback; each is recorded in
        the snapshot being taken, which is published only if the read completes."""
        name = self.primary.name
        start = state.since if state.fallback is not None else state.tiers.get(name, {})
        taking = _Taking(self.snapshots, name)
        end, completed = start, False
        try:
            for inner in self.primary.read(start):
                taking.record(inner)
                end = inner.position
                yield self._batch(0, inner, {**state.tiers, name: inner.position}, None)
            completed = True
        finally:
            taking.finish(completed=completed, position=end, taken_at=self.clock.now())

    def _fallback(self, index: int, state: _State) -> Generator[Batch, None, None]:
        """Tier ``index``'s batches from its own position; the primary's stays frozen."""
        tier = self.tiers[index]
        fallback = {"since": state.since, "tier": tier.name}
        tiers = dict(state.tiers)
        for inner in tier.read(tiers.get(tier.name, {})):
            tiers = {**tiers, tier.name: inner.position}
            yield self._batch(index, inner, tiers, fallback)

    def _batch(
        self, index: int, inner: Batch, tiers: dict[str, Position], fallback: Position | None
    ) -> Batch:
        """``inner`` as served by tier ``index``: its id prefixed, its provenance attached."""
        tier = self.tiers[index]
        stale_s = 0.0
        if isinstance(tier, SnapshotSource):
            stale_s = round(max(0.0, self.clock.now() - float(inner.position["taken_at"])), 6)
        facts = {"tier": tier.name, "tier_index": index, "stale_s": stale_s}
        metadata = {**(inner.data.schema.metadata or {}), PROVENANCE_KEY: json.dumps(facts)}
        return Batch(
            id=f"{tier.name}:{inner.id}",
            data=inner.data.replace_schema_metadata(metadata),
            position={"tiers": tiers, "fallback": fallback},
            source=tier.name,
        )


@dataclass(frozen=True, slots=True)
class _State:
    """A FallbackSource position, read: each tier's position and the open fallback, if any."""

    primary: str
    tiers: dict[str, Position]
    fallback: dict[str, Any] | None

    @property
    def since(self) -> Position:
        """Where the primary stands: where it failed, during a fallback."""
        if self.fallback is not None:
            since: Position = self.fallback["since"]
            return since
        return self.tiers.get(self.primary, {})

    @classmethod
    def parse(cls, position: Position, primary: str) -> _State:
        if position and "tiers" not in position:  # the primary's checkpoint from before
            return cls(primary, {primary: dict(position)}, None)
        tiers, fallback = position.get("tiers", {}), position.get("fallback")
        valid_fallback = fallback is None or (
            isinstance(fallback, dict) and isinstance(fallback.get("since"), dict)
        )
        if not isinstance(tiers, dict) or not valid_fallback:
            raise ConfigError(
                f"position {position!r} was not written by a FallbackSource; reset the "
                "pipeline's checkpoint or point it at the source that wrote it."
            )
        return cls(primary, tiers, fallback)


def _check_names(tiers: tuple[Source, ...]) -> None:
    names = [tier.name for tier in tiers]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated or not all(names):
        raise ConfigError(
            f"the tiers of a FallbackSource need distinct, non-empty names (got {names}); "
            "pass name=... to each source."
        )


def _note_failures(
    error: BaseException, failures: list[TransientError], tiers: tuple[Source, ...]
) -> None:
    """Note on ``error`` what each earlier (or later) tier failed with."""
    for tier, failure in zip(tiers, failures, strict=False):
        error.add_note(f"tier {tier.name!r} failed too: {type(failure).__name__}: {failure}")


class _Taking:
    """The snapshot taken during one read of the primary. A store that fails costs only the
    snapshot (with a warning), never the primary's batches."""

    def __init__(self, store: SnapshotStore | None, source: str) -> None:
        self.store = store
        self.source = source

    def record(self, batch: Batch) -> None:
        if self.store is not None:
            try:
                self.store.record(self.source, batch)
            except MendflowError as exc:
                self._give_up(exc)

    def finish(self, *, completed: bool, position: Position, taken_at: float) -> None:
        if self.store is None:
            return
        if not completed:
            self.store.discard(self.source)
            return
        try:
            self.store.commit(self.source, position=position, taken_at=taken_at)
        except MendflowError as exc:
            self._give_up(exc)

    def _give_up(self, error: MendflowError) -> None:
        assert self.store is not None
        warnings.warn(
            f"no snapshot of {self.source!r} this time, the last one stays: {error}",
            RuntimeWarning,
            stacklevel=2,
        )
        self.store.discard(self.source)
        self.store = None


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
        manifest = {
            "source": source_name,
            "taken_at": when,
            "parts": [list(part) for part in snapshot.parts],
            "position": position,
        }
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
        snapshot = self.latest(source_name)
        if snapshot is None:
            raise SourceUnavailable(
                f"no snapshot of {source_name!r} in {self.folder} yet; one is taken when a read "
                "of the source completes, so run once with it healthy.",
                dependency=source_name,
            )
        return self.tables(snapshot)

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

    def read(self, position: Position) -> Iterator[Batch]:
        """Yield one batch per part of the snapshot, from the row after ``offset``."""
        snapshot = self.store.latest(self.source_name)
        if snapshot is None:
            raise SourceUnavailable(
                f"{self.name}: no snapshot of {self.source_name!r} in {self.store.folder} yet; "
                "one is taken when a read of that source completes, so run once with it healthy.",
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
