"""Files that appear whole or not at all: names from batch identity, atomic writes, swaps.

A file is written under a temporary name in its own folder, flushed and ``fsync``-ed, renamed
over its final name (``os.replace``, atomic on POSIX), and the folder is ``fsync``-ed so the
rename itself survives a power cut. A reader globbing ``*.parquet`` never sees a temporary file
(``.<tag>.<random>.tmp``) nor half a file.

A batch's file name is derived from its identity alone: ``<readable>-<pipeline tag>-<digest>``,
the readable part the end of the batch id (file and offset), the tag a hash of the pipeline,
the digest a hash of pipeline and batch id. A batch written again (after a crash between its
rename and its checkpoint) therefore replaces itself.

``exchange`` swaps two folders in one step (Linux ``renameat2(RENAME_EXCHANGE)``); where that
is missing it falls back to three renames, which a crash can interrupt (the checkpoint tells
which side is which, see ``mendflow.sinks.parquet``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from mendflow.exceptions import (
    DestinationError,
    DestinationUnavailable,
    MendflowError,
    ResourceExhausted,
    SchemaMismatch,
)

__all__ = ["ERRNOS", "digest", "exchange", "file_name", "fsync_dir", "publish", "remove",
           "remove_temps", "remove_tree", "tag", "translate", "write_json", "write_parquet"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2

#: OS errors by ``errno`` and what each means to mendflow; any other is taken as transient.
ERRNOS: dict[int, type[MendflowError]] = {
    errno.ENOSPC: ResourceExhausted,
    errno.EDQUOT: ResourceExhausted,
    errno.EFBIG: ResourceExhausted,
    errno.EMFILE: ResourceExhausted,
    errno.ENFILE: ResourceExhausted,
    errno.EACCES: DestinationError,
    errno.EPERM: DestinationError,
    errno.EROFS: DestinationError,
    errno.ENOTDIR: DestinationError,
    errno.EISDIR: DestinationError,
    errno.ENAMETOOLONG: DestinationError,
}
_HINTS: dict[type[MendflowError], str] = {
    ResourceExhausted: "free disk space (or file handles) under the folder, then run again",
    DestinationError: "check the folder's path and permissions, then run again",
    DestinationUnavailable: "the folder's storage failed for now (a network mount, I/O); it "
    "is retried, and a run started again resumes from the checkpoint",
    SchemaMismatch: "Parquet cannot store a column of this batch; cast it with a transform",
}


def tag(pipeline: str) -> str:
    """Eight hex digits naming ``pipeline`` in file names (its temporary files, its batches)."""
    return hashlib.sha256(pipeline.encode()).hexdigest()[:8]


def digest(pipeline: str, batch_id: str) -> str:
    """Sixteen hex digits naming a batch of ``pipeline``: its files and manifest entry."""
    return hashlib.sha256(f"{pipeline}\x00{batch_id}".encode()).hexdigest()[:16]


def file_name(pipeline: str, batch_id: str) -> str:
    """The batch's file name: readable, safe in any folder, and the same every time."""
    readable = _UNSAFE.sub("_", batch_id).strip("._-")[-48:].lstrip("._-") or "batch"
    return f"{readable}-{tag(pipeline)}-{digest(pipeline, batch_id)}.parquet"


def write_parquet(folder: Path, table: pa.Table, owner: str) -> Path:
    """Write ``table`` to a new temporary file in ``folder``, flushed to disk; return it."""
    return _write(folder, owner, lambda out: pq.write_table(table, out))


def write_json(path: Path, text: str, owner: str) -> None:
    """Replace the file at ``path`` with ``text`` atomically and durably."""
    temp = _write(path.parent, owner, lambda out: out.write(text.encode()))
    publish(temp, path)
    fsync_dir(path.parent)


def publish(temp: Path, final: Path) -> None:
    """Rename ``temp`` over ``final`` (fsync the folder after the last one)."""
    os.replace(temp, final)


def remove(*paths: Path | None) -> None:
    """Delete files that may or may not be there."""
    for path in paths:
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def remove_temps(folder: Path, owner: str) -> None:
    """Delete ``owner``'s temporary files left in ``folder`` by a process that was killed."""
    for temp in folder.glob(f".{owner}.*.tmp"):
        remove(temp)


def fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def exchange(one: Path, other: Path) -> None:
    """Swap the folders ``one`` and ``other`` (``other`` may not exist: then a rename)."""
    if not other.exists():
        os.rename(one, other)
    elif not _renameat2(one, other):
        aside = other.with_name(f".{other.name}.{uuid.uuid4().hex}")
        os.rename(other, aside)
        os.rename(one, other)
        os.rename(aside, one)
    fsync_dir(other.parent)


def remove_tree(folder: Path) -> None:
    """Delete a folder and what it holds, if it is there."""
    shutil.rmtree(folder, ignore_errors=True)


def translate(exc: BaseException, doing: str, *, dependency: str) -> MendflowError:
    """An OS or Arrow error in mendflow's taxonomy, with what to do."""
    if isinstance(exc, OSError):
        kind = ERRNOS.get(exc.errno or 0, DestinationUnavailable)
    else:  # pyarrow's ArrowInvalid, ArrowNotImplementedError, ArrowTypeError
        kind = SchemaMismatch
    return kind(f"{doing}: {exc}. {_HINTS[kind]}.", dependency=dependency)


def _write(folder: Path, owner: str, fill: Callable[[BinaryIO], object]) -> Path:
    temp = folder / f".{owner}.{uuid.uuid4().hex}.tmp"
    try:
        with temp.open("xb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        remove(temp)
        raise
    return temp


def _renameat2(one: Path, other: Path) -> bool:
    """Exchange atomically where the OS can; False where it cannot (then fall back)."""
    try:
        call = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    if call(_AT_FDCWD, os.fsencode(one), _AT_FDCWD, os.fsencode(other), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(one))
