"""Parquet folder destination: one file per batch, each whole or absent, then its checkpoint.

The folder at ``path`` holds::

    data/<batch>.parquet            the table: one file per batch (``_parquet_files.file_name``)
    dead_letters/<batch>.parquet    the batch's dead letters, when it has any
    _mendflow/<pipeline>.json       the checkpoint and the manifest of committed batches
    _staging/                       a replace run in progress

Read the table with any Parquet reader, e.g. DuckDB ``SELECT * FROM
read_parquet('path/data/*.parquet', union_by_name = true)`` or polars
``pl.scan_parquet('path/data/*.parquet')``; ``union_by_name`` (polars: ``how="diagonal"`` with
``pl.concat``) when the batches' columns drifted, since each file keeps its batch's own schema
(schema policies do not apply to a folder). Dead letters read the same way from
``dead_letters/``; there is no dead-letter store to replay from (``mendflow dlq`` needs a
database destination).

Each batch, under the pipeline's lock: its data and dead-letter files are written to temporary
files beside their final names and ``fsync``-ed; the checks audit the batch; the files are
renamed into place and their folders ``fsync``-ed; ``on_staged()``; then the checkpoint file is
replaced the same atomic way. The checkpoint is the commit: a crash before it leaves files whose
batch the resumed run reads again and writes under the same names (they replace themselves), and
the run's start sweeps away any file of the pipeline that its manifest does not list (so a
changed ``batch_size`` cannot leave a duplicate). A batch already in the manifest is skipped.

Modes: ``append`` adds a file per batch; ``replace`` writes the run into ``_staging/`` and
``finish`` swaps it with ``data/`` in one step (``renameat2`` exchange on Linux), then commits
the staged checkpoint and deletes the old files (a folder in replace mode belongs to one
pipeline; the dead letters kept are those of the published run's batches and of the run in
progress); ``merge`` is refused (``ConfigError``): files cannot update rows in place, and
rewriting the folder for every batch would not scale.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import duckdb
import pyarrow as pa

from mendflow.batch import Committed, Finding, Load, Position
from mendflow.exceptions import ConfigError, DestinationError
from mendflow.sinks import _duckdb_errors
from mendflow.sinks import _parquet_audit as _audit
from mendflow.sinks import _parquet_files as _files
from mendflow.sinks import _parquet_state as _state
from mendflow.sinks._parquet_state import Slot, State

__all__ = ["ParquetSink"]

_GENERATION = ".generation"


class ParquetSink:
    """Load into the Parquet folder at ``path`` (created if missing)."""

    def __init__(self, path: str | os.PathLike[str], *, name: str = "") -> None:
        self.path = Path(path)
        self.name = name or f"parquet:{self.path}"

    # -- the Sink interface -------------------------------------------------------------------

    def position(self, pipeline: str, *, mode: str = "append") -> Position:
        """The committed position of ``pipeline``; for replace, that of the staging in progress.
        Sweeps what a killed run left: temporary files, files its checkpoint does not list."""
        _refuse_merge(mode)
        with self._guard(f"reading the checkpoint of {pipeline}"), self._locked(pipeline):
            state = _state.load(self.path, pipeline)
            staged = state.staged
            if staged is not None and self._generation(self._data) == staged.generation:
                state = self._promote(pipeline, staged)  # swapped in; the checkpoint was not
            self._sweep(pipeline, state)
            if mode != "replace":
                return state.committed.position
            if state.staged is None:
                _files.remove_tree(self._staging)
                return {}
            self._check_staging(state.staged)
            return state.staged.position

    def write(
        self, load: Load, *, on_staged: Callable[[], None] = lambda: None
    ) -> Committed | None:
        """Publish the batch's files, then commit its position; None if already committed."""
        _refuse_merge(load.mode)
        doing = f"writing batch {load.batch_id} into {self.path}"
        with self._guard(doing), self._locked(load.pipeline):
            state = _state.load(self.path, load.pipeline)
            staged = load.mode == "replace"
            slot = (state.staged or Slot()) if staged else state.committed
            digest = _files.digest(load.pipeline, load.batch_id)
            if slot.has(digest):
                return None
            if staged and state.staged is None:
                slot = Slot(generation=self._fresh_staging())
            elif staged:
                self._check_staging(slot)
            findings = self._publish(load, self._staging if staged else self._data, slot,
                                     on_staged)
            slot = slot.add(digest, load.data.num_rows, load.position)
            moved = replace(state, staged=slot) if staged else replace(state, committed=slot)
            _state.save(self.path, load.pipeline, moved)
        _audit.report(load, findings)
        return Committed(load.data.num_rows, load.dead_letters.num_rows)

    def finish(self, pipeline: str, *, mode: str = "append") -> None:
        """For replace, swap the staged folder in, then commit its position."""
        if mode != "replace":
            return
        with self._guard(f"publishing the replacement of {self._data}"), self._locked(pipeline):
            staged = _state.load(self.path, pipeline).staged
            if staged is None:  # the source had nothing: publish an empty folder
                staged = Slot(generation=self._fresh_staging())
            if self._generation(self._staging) == staged.generation:
                _files.exchange(self._staging, self._data)
            elif self._generation(self._data) != staged.generation:
                self._check_staging(staged)
            self._promote(pipeline, staged)

    def close(self) -> None:
        """Nothing is held open between calls."""

    # -- internals ----------------------------------------------------------------------------

    @property
    def _data(self) -> Path:
        return self.path / "data"

    @property
    def _dead(self) -> Path:
        return self.path / "dead_letters"

    @property
    def _staging(self) -> Path:
        return self.path / "_staging"

    def _guard(self, doing: str) -> _Translated:
        return _Translated(doing, self.name)

    def _locked(self, pipeline: str) -> contextlib.AbstractContextManager[None]:
        return _state.locked(self.path, pipeline)

    def _publish(
        self, load: Load, folder: Path, slot: Slot, on_staged: Callable[[], None]
    ) -> list[Finding]:
        """Write the batch's files, audit, rename them in, call ``on_staged``; on any failure
        remove what this call put in place."""
        name = _files.file_name(load.pipeline, load.batch_id)
        owner = _files.tag(load.pipeline)
        folder.mkdir(parents=True, exist_ok=True)
        self._dead.mkdir(parents=True, exist_ok=True)
        data = dead = None
        placed: list[Path] = []
        try:
            if load.data.num_rows:
                data = _files.write_parquet(folder, load.data, owner)
            if load.dead_letters.num_rows:
                dead = _files.write_parquet(self._dead, _dead_letters(load), owner)
            findings = _audit.audit(load, folder, name, load.data, load.dead_letters, slot)
            for temp, final in ((data, folder / name), (dead, self._dead / name)):
                if temp is None:
                    _files.remove(final)  # left by an attempt that never committed
                else:
                    _files.publish(temp, final)
                    placed.append(final)
            _files.fsync_dir(folder)
            _files.fsync_dir(self._dead)
            on_staged()
        except BaseException:
            _files.remove(data, dead, *placed)
            raise
        return findings

    def _sweep(self, pipeline: str, state: State) -> None:
        """Delete the pipeline's temporary files, and its batch files no checkpoint lists."""
        owner = _files.tag(pipeline)
        listed = {d for d, _ in state.committed.batches}
        staged = {d for d, _ in state.staged.batches} if state.staged else set()
        for folder, keep in ((self._data, listed), (self._staging, staged),
                             (self._dead, listed | staged), (self.path / "_mendflow", set())):
            if not folder.is_dir():
                continue
            _files.remove_temps(folder, owner)
            for path in folder.glob(f"*-{owner}-*.parquet"):
                if path.stem.rsplit("-", 1)[-1] not in keep:
                    _files.remove(path)

    def _fresh_staging(self) -> str:
        """An empty ``_staging/`` with a new generation; returns the generation."""
        _files.remove_tree(self._staging)
        self._staging.mkdir(parents=True)
        generation = os.urandom(8).hex()
        _files.write_json(self._staging / _GENERATION, generation, "staging")
        _files.fsync_dir(self.path)
        return generation

    def _generation(self, folder: Path) -> str:
        try:
            return (folder / _GENERATION).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return ""

    def _check_staging(self, staged: Slot) -> None:
        if self._generation(self._staging) != staged.generation:
            raise DestinationError(
                f"{self._staging} no longer holds the replace run the checkpoint describes "
                f"(generation {staged.generation}); delete the `staged` entry of the pipeline's "
                f"checkpoint in {self.path / '_mendflow'} to start the replacement again.",
                dependency=self.name,
            )

    def _promote(self, pipeline: str, staged: Slot) -> State:
        """Commit a published replacement (its batches listed as committed: they are the files
        of ``data/``); its old files go. Returns the new state."""
        state = State(committed=Slot(staged.position, staged.batches))
        _state.save(self.path, pipeline, state)
        _files.remove_tree(self._staging)
        return state


class _Translated:
    """A block whose OS, Arrow and DuckDB errors are translated (``_parquet_files.translate``,
    ``_duckdb_errors.translate``)."""

    def __init__(self, doing: str, dependency: str) -> None:
        self.doing, self.dependency = doing, dependency

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, OSError | pa.ArrowException):
            raise _files.translate(exc, self.doing, dependency=self.dependency) from exc
        if isinstance(exc, duckdb.Error):  # the audit reading the folder's files
            raise _duckdb_errors.translate(exc, self.doing, dependency=self.dependency) from exc


def _dead_letters(load: Load) -> pa.Table:
    """The load's dead letters with where they come from and when."""
    dead = load.dead_letters
    n = dead.num_rows
    now = pa.scalar(dt.datetime.now(dt.UTC), pa.timestamp("us", tz="UTC"))
    front = {name: pa.repeat(pa.scalar(value, pa.string()), n) for name, value in (
        ("pipeline", load.pipeline), ("run_id", load.run_id), ("batch_id", load.batch_id))}
    return pa.table({**front, **{c: dead[c] for c in dead.column_names},
                     "first_seen": pa.repeat(now, n)})


def _refuse_merge(mode: str) -> None:
    if mode == "merge":
        raise ConfigError(
            "a Parquet folder destination takes write_mode append or replace, not merge: files "
            "cannot update rows in place. Use append (and keep the last row per key when "
            "reading) or replace, or a database destination (duckdb, postgres, sqlite) to merge."
        )
