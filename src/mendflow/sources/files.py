"""Files in a folder: JSON lines, CSV or Parquet, read incrementally.

A file is known by its path under the pattern's folder and its fingerprint (size and modification
time). A file already loaded is not read again; a new file, or one whose fingerprint changed, is
(in full: in append mode the rows of its earlier version stay, so rewrite files only with merge).
A file modified less than ``min_age_s`` ago is left for a later run, so a file still being copied
into the folder is not loaded half-written.
Inside a file, the position says how far the file was consumed (for JSON lines the byte offset
and line number past the last record committed, for CSV, Parquet and JSON documents the rows
committed), so a run that died half-way through a file resumes at the next record.

Input that cannot be parsed is a dead letter (``Batch.rejects``, stage ``parse``), kept
byte-exact: a JSON line that is broken, not UTF-8, not an object, over ``max_record_bytes`` or
with a field over ``max_field_bytes``, or with a value that does not fit its column's detected
type (``sources/_jsonl.py``); a CSV row that is ragged, not UTF-8 or does not cast
(``sources/_csv.py``; a file's CSV rejects ride on its last batch, so a resumed read commits them
once). Each JSON-lines batch carries its rows' original lines in ``Batch.raw``. Parquet is typed
already and read as it is. A ``.json`` file that is one JSON document (a top-level array, or a
pretty-printed object) is read whole by DuckDB, by row offset; a malformed one fails the file
(``sources/_document.py``).

    FileSource("drops/*.csv", columns={"amount": "double"})
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from mendflow import _engine
from mendflow._arrow import rechunk
from mendflow._sql import ident
from mendflow.batch import Batch, Position, no_dead_letters
from mendflow.exceptions import (
    ConfigError,
    ResourceExhausted,
    SchemaMismatch,
    SourceUnavailable,
)
from mendflow.sources import _csv, _document, _jsonl
from mendflow.sources._folder import (
    FORMATS,
    base_folder,
    fingerprint,
    format_of,
    matching,
    suffix_of,
)
from mendflow.sources._lines import read_lines

#: The default batch: one DuckDB row group, which DuckDB writes straight to the database file
#: instead of through its write-ahead log (measured: 1M rows load ~10 % faster than at 100,000).
ROW_GROUP = 122_880
#: Default limits: a field value (JSON lines) and a whole line (JSON lines), in bytes.
MAX_FIELD_BYTES = 1 << 20
MAX_RECORD_BYTES = 16 << 20


@dataclass(frozen=True, slots=True)
class _Chunk:
    """A file's chunk: rows, their lines, dead letters, where it started and what it leaves."""

    data: pa.Table
    offset: int
    state: dict[str, int]
    rejects: pa.Table = field(default_factory=no_dead_letters)
    raw: pa.Array | None = None


class FileSource:
    """Read every file matching ``pattern`` that the position has not seen complete.

    ``columns`` names columns to read as raw text, so that the pipeline's type coercion sees the
    value exactly as written and can set a bad one aside instead of failing the whole file.
    ``max_field_bytes`` and ``max_record_bytes`` bound a JSON line's field values and the line
    itself; a line over either is a dead letter.
    """

    def __init__(
        self,
        pattern: str | os.PathLike[str],
        *,
        format: str | None = None,
        columns: Mapping[str, str] | None = None,
        batch_size: int = ROW_GROUP,
        min_age_s: float = 0.0,
        name: str = "",
        max_field_bytes: int = MAX_FIELD_BYTES,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        for label, limit in (("max_field_bytes", max_field_bytes),
                             ("max_record_bytes", max_record_bytes)):
            if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
                raise ConfigError(f"{label} must be a positive number of bytes, not {limit!r}.")
        self.limits = _jsonl.Limits(record_bytes=max_record_bytes, field_bytes=max_field_bytes)
        self.pattern = str(pattern)
        self.min_age_s = min_age_s
        if format is not None and format not in FORMATS:
            raise ConfigError(f"unknown file format {format!r}; use one of: {', '.join(FORMATS)}.")
        self.format = format
        self.raw_columns = frozenset(columns or ())
        self.batch_size = batch_size
        self.name = name or f"files:{self.pattern}"

    def reading_as_text(self, columns: Iterable[str]) -> FileSource:
        """A copy that also reads ``columns`` as raw text (for the pipeline's declared types)."""
        copy = FileSource(
            self.pattern,
            format=self.format,
            batch_size=self.batch_size,
            min_age_s=self.min_age_s,
            name=self.name,
            max_field_bytes=self.limits.field_bytes,
            max_record_bytes=self.limits.record_bytes,
        )
        copy.raw_columns = self.raw_columns | frozenset(columns)
        return copy

    def read(self, position: Position) -> Iterator[Batch]:
        """Yield the unread rows of every matching file, oldest name first."""
        seen: dict[str, Any] = dict(position.get("files", {}))
        base = base_folder(self.pattern)
        con = _engine.cursor()
        try:
            for path in matching(self.pattern, min_age_s=self.min_age_s):
                key = os.path.relpath(path, base)
                version = fingerprint(path)
                state = seen.get(key, {})
                if state.get("fp") == version and state.get("done"):
                    continue
                resume = state if state.get("fp") == version else {}
                for chunk, done in _with_last(self._chunks(con, path, resume)):
                    seen[key] = {"fp": version, **chunk.state, "done": done}
                    yield Batch(
                        id=f"file:{key}@{version}#{chunk.offset}",
                        data=chunk.data,
                        position={"files": dict(seen)},
                        source=self.name,
                        rejects=chunk.rejects,
                        raw=chunk.raw,
                    )
        finally:
            con.close()

    def _chunks(
        self, con: duckdb.DuckDBPyConnection, path: str, state: Mapping[str, Any]
    ) -> Iterator[_Chunk]:
        """The file's chunks from where ``state`` left it (at least one, maybe empty)."""
        fmt = self.format or format_of(path)
        try:
            if fmt == "jsonl" and suffix_of(path) == ".json":
                fmt = _document.layout(path) or fmt
            if fmt == "jsonl":
                yield from self._json_chunks(con, path, state)
            else:
                yield from self._table_chunks(con, fmt, path, state.get("rows", 0))
        except duckdb.Error as exc:
            raise _translate(exc, path) from exc
        except MemoryError as exc:
            raise ResourceExhausted(
                f"{path}: out of memory while parsing ({exc}); lower batch_size or raise "
                f"${_engine.ENV}.",
                dependency=path,
            ) from exc
        except OSError as exc:  # DuckDB errors that cross the Arrow stream arrive as OSError
            raise SourceUnavailable(
                f"{path}: reading failed: {exc}; check the file and the memory limit "
                f"(${_engine.ENV}).",
                dependency=path,
            ) from exc

    def _json_chunks(
        self, con: duckdb.DuckDBPyConnection, path: str, state: Mapping[str, Any]
    ) -> Iterator[_Chunk]:
        """JSON lines from the byte offset in ``state`` (an older state counts records only)."""
        types = _jsonl.detect(con, path, limits=self.limits)
        types = {c: "VARCHAR" if c in self.raw_columns else t for c, t in types.items()}
        records = int(state.get("rows", 0))
        start, line = int(state.get("byte", 0)), int(state.get("line", 0))
        skip = 0 if "byte" in state else records
        chunks = read_lines(path, start=start, line=line, size=self.batch_size, skip=skip)
        empty = True
        for lines in chunks:
            parsed = _jsonl.parse(con, lines, types=types, limits=self.limits)
            (start, line), first = lines.end((start, line)), records
            records += len(lines.records)
            state = {"rows": records, "byte": start, "line": line}
            yield _Chunk(parsed.data, first, state, parsed.rejects, parsed.raw)
            empty = False
        if empty:
            yield _Chunk(pa.table({}), records, {"rows": records, "byte": start, "line": line})

    def _table_chunks(
        self, con: duckdb.DuckDBPyConnection, fmt: str, path: str, start: int
    ) -> Iterator[_Chunk]:
        """CSV, Parquet or JSON-document rows from row ``start``; a CSV file's rejects ride on its
        last chunk."""
        offset, previous = start, None
        reader, rejects = self._reader(con, fmt, path, start)
        for table in rechunk(reader, self.batch_size):
            if previous is not None:
                yield _Chunk(previous, offset, {"rows": offset + previous.num_rows})
                offset += previous.num_rows
            previous = table
        if previous is None:
            previous = pa.table({})
        last = {"rows": offset + previous.num_rows}
        dead = _csv.rejects(con, path, rejects) if rejects else no_dead_letters()
        yield _Chunk(previous, offset, last, dead)

    def _reader(
        self, con: duckdb.DuckDBPyConnection, fmt: str, path: str, start: int
    ) -> tuple[Iterable[pa.RecordBatch], str]:
        """A stream of the file's rows from row ``start``, and the table of its CSV rejects."""
        if fmt in ("array", "unstructured"):
            records = _document.rows(con, path, layout=fmt, start=start, text=self.raw_columns,
                                     batch_size=self.batch_size)
            return records, ""
        if fmt == "csv":
            sql, rejects = _csv.reader_sql(typed=bool(self.raw_columns))
            params: dict[str, Any] = {"path": path, "start": start}
            if self.raw_columns:
                detected = con.sql("DESCRIBE SELECT * FROM read_csv($path)", params={"path": path})
                raw = {r[0]: "VARCHAR" for r in detected.fetchall() if r[0] in self.raw_columns}
                if raw:
                    params["columns"] = raw
                else:
                    sql, rejects = _csv.reader_sql(typed=False)
            return con.sql(sql, params=params).to_arrow_reader(self.batch_size), rejects
        relation = con.sql("SELECT * FROM read_parquet($path)", params={"path": path})
        text = [c for c in relation.columns if c in self.raw_columns]
        select = "*"
        if text:
            casts = ", ".join(f"CAST({ident(c)} AS VARCHAR) AS {ident(c)}" for c in text)
            select = f"* REPLACE ({casts})"
        sql = f"SELECT {select} FROM read_parquet($path) OFFSET $start"
        reader = con.sql(sql, params={"path": path, "start": start})
        return reader.to_arrow_reader(self.batch_size), ""


def _with_last(chunks: Iterable[_Chunk]) -> Iterator[tuple[_Chunk, bool]]:
    """Each chunk and whether it is the last one."""
    previous = None
    for chunk in chunks:
        if previous is not None:
            yield previous, False
        previous = chunk
    if previous is not None:
        yield previous, True


def _translate(exc: duckdb.Error, path: str) -> Exception:
    """Map a DuckDB reading error to mendflow's taxonomy by its type."""
    if isinstance(exc, duckdb.ConversionException | duckdb.InvalidInputException):
        return SchemaMismatch(
            f"{path}: {exc}. Declare the column's type under `columns:` so bad values are set "
            "aside as dead letters instead of stopping the run.",
            dependency=path,
        )
    if isinstance(exc, duckdb.IOException):
        return SourceUnavailable(f"{path}: {exc}; check the file is readable.", dependency=path)
    return SchemaMismatch(f"{path}: cannot read it: {exc}; check the file.", dependency=path)
