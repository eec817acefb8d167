"""A file's lines as zero-copy Arrow arrays of their exact bytes, in chunks of N records.

The file is read in blocks; numpy finds the newlines; each block's lines (terminators ``\\n`` and
``\\r\\n`` removed, every other byte kept) become one ``pa.large_binary()`` array over one buffer.
Blank lines (empty or whitespace only) are not records: they are skipped but counted, so line
numbers stay those of the file. A chunk ends after its last record's terminator: that byte offset
is where a later read resumes, and its last record's line number the lines before that offset.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, cast

import numpy as np
import pyarrow as pa

#: Bytes read at a time (a line longer than this spans several reads).
BLOCK = 16 << 20
_BLANK = frozenset(b" \t\r\f\v")


@dataclass(frozen=True, slots=True)
class Lines:
    """Records read from a file: their bytes, line numbers and where the next read starts."""

    records: pa.LargeBinaryArray
    #: The 1-based line number of each record.
    numbers: np.ndarray
    #: The byte offset just past each record's terminator.
    stops: np.ndarray

    def end(self, default: tuple[int, int]) -> tuple[int, int]:
        """(byte offset, lines) just past the last record; ``default`` when there is none."""
        if not len(self.stops):
            return default
        return int(self.stops[-1]), int(self.numbers[-1])


def read_lines(path: str, *, start: int, line: int, size: int, skip: int = 0) -> Iterator[Lines]:
    """Yield chunks of ``size`` records from byte ``start`` (line ``line`` before it), the first
    ``skip`` records left out; the last chunk may be shorter (or empty, for a file without any)."""
    pending: list[Lines] = []
    held = 0
    for piece in _pieces(path, start, line, size):
        if skip:
            dropped = min(skip, len(piece.records))
            piece, skip = _slice(piece, dropped, len(piece.records)), skip - dropped
        while len(piece.records):
            take = min(size - held, len(piece.records))
            pending.append(_slice(piece, 0, take))
            piece, held = _slice(piece, take, len(piece.records)), held + take
            if held == size:
                yield _join(pending)
                pending, held = [], 0
    if pending:
        yield _join(pending)


def _pieces(path: str, start: int, line: int, size: int) -> Iterator[Lines]:
    """The file's lines in pieces of ``size`` lines (the last one shorter): blocks are gathered
    until they hold that many, so a chunk of records is usually one piece, not a concatenation."""
    with open_binary(path) as stream:
        stream.seek(start)
        blocks: list[bytes] = []
        held, offset = 0, start
        while True:
            block = stream.read(BLOCK)
            if block:
                blocks.append(block)
                held += block.count(b"\n")
                if held < size:
                    continue
            data = blocks[0] if len(blocks) == 1 else b"".join(blocks)
            if not data:
                return
            newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
            cuts = list(newlines[size - 1 :: size] + 1)
            if not block and (not cuts or cuts[-1] != len(data)):
                cuts.append(len(data))
            begin = 0
            for cut in cuts:
                yield _split(data[begin:cut], offset + begin, line)
                line += int(np.searchsorted(newlines, cut)) - int(
                    np.searchsorted(newlines, begin)) + (data[cut - 1] != 10)
                begin = cut
            if not block:
                return
            offset += begin
            blocks = [data[begin:]] if begin < len(data) else []
            held = len(newlines) - int(np.searchsorted(newlines, begin))


def _split(data: bytes, offset: int, line: int) -> Lines:
    """The records of ``data`` (whole lines, the last one's terminator optional) that starts at
    byte ``offset`` after ``line`` lines."""
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    ends = newlines if data.endswith(b"\n") else np.append(newlines, len(data))
    starts = np.empty_like(ends)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    crlf = ends > starts
    crlf[len(newlines) :] = False  # a last line without terminator keeps a final \r
    crlf[crlf] = buf[ends[crlf] - 1] == 13
    lengths = ends - starts - crlf
    body = data.replace(b"\r\n", b"\n") if crlf.any() else data
    body = body.replace(b"\n", b"")
    offsets = np.zeros(len(ends) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    array = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(body)]
    )
    numbers = np.arange(line + 1, line + 1 + len(ends), dtype=np.int64)
    stops = offset + np.minimum(ends + 1, len(data))
    keep = _records(buf, starts, lengths)
    if not keep.all():
        array = array.filter(pa.array(keep))
        numbers, stops = numbers[keep], stops[keep]
    return Lines(array, numbers, stops)


def _records(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Which lines hold a record: blank ones (empty or whitespace only) do not."""
    keep = lengths > 0
    first = buf[np.minimum(starts, len(buf) - 1)]
    suspects = np.flatnonzero(keep & np.isin(first, list(_BLANK)))
    for i in suspects:  # rare: lines that start with whitespace
        keep[i] = not _BLANK.issuperset(buf[starts[i] : starts[i] + lengths[i]].tobytes())
    return keep


def _slice(lines: Lines, begin: int, stop: int) -> Lines:
    return Lines(lines.records[begin:stop], lines.numbers[begin:stop], lines.stops[begin:stop])


def _join(parts: list[Lines]) -> Lines:
    if len(parts) == 1:
        return parts[0]
    return Lines(
        pa.concat_arrays([p.records for p in parts]),
        np.concatenate([p.numbers for p in parts]),
        np.concatenate([p.stops for p in parts]),
    )


def open_binary(path: str, *, buffered: bool = False) -> BinaryIO:
    """``path`` opened for reading bytes (decompressed if it ends in ``.gz``)."""
    if path.endswith(".gz"):
        return cast(BinaryIO, gzip.open(path, "rb"))
    return open(path, "rb", buffering=-1 if buffered else 0)
