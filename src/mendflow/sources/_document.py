"""JSON documents: a ``.json`` file that is not JSON lines, read whole by DuckDB's read_json.

Such a file is a top-level array of records (its first non-blank byte is ``[``), or records
spread over several lines, such as one pretty-printed object (neither of its first two non-blank
lines is a complete JSON value on its own). Any other ``.json`` file is JSON lines.
read_json streams its records as Arrow batches, typed by its own detection (the columns the
pipeline declared read as text), resumed by row offset.

A document cannot be split into records without parsing all of it, so it is not dead-lettered
record by record: a malformed document, or a value that does not fit its column's type, fails the
file with a ``SchemaMismatch`` that names it and says to fix it or convert it to JSON lines (one
object per line), where each bad line becomes a dead letter of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import duckdb
import pyarrow as pa

from mendflow.exceptions import SchemaMismatch
from mendflow.sources._lines import open_binary

#: Bytes read from the head of a ``.json`` file to tell JSON lines from a document.
HEAD = 1 << 20
#: How DuckDB's errors read once they cross the Arrow stream (as OSError): the malformed ones.
_MALFORMED = ("Invalid Input Error", "Conversion Error")
_SQL = "SELECT * FROM read_json($path, format = $layout, columns = $columns) OFFSET $start"
_DESCRIBE = "DESCRIBE SELECT * FROM read_json($path, format = $layout)"


def layout(path: str) -> str | None:
    """read_json's ``format`` for the document in ``path`` ("array" or "unstructured"), or None
    when ``path`` holds JSON lines."""
    with open_binary(path, buffered=True) as stream:
        head = stream.read(HEAD)
    if head.lstrip().startswith(b"["):
        return "array"
    lines = head.split(b"\n")
    whole = lines if len(head) < HEAD else lines[:-1]  # the last one may be cut short
    first = [line for line in whole if line.strip()][:2]
    if not first or any(_complete(line) for line in first):
        return None
    return "unstructured"


def rows(
    con: duckdb.DuckDBPyConnection,
    path: str,
    *,
    layout: str,
    start: int,
    text: frozenset[str],
    batch_size: int,
) -> Iterator[pa.RecordBatch]:
    """The document's records from row ``start``, ``text`` columns as raw text."""
    try:
        params = {"path": path, "layout": layout}
        types = {str(r[0]): str(r[1]) for r in con.sql(_DESCRIBE, params=params).fetchall()}
        columns = {c: "VARCHAR" if c in text else t for c, t in types.items()}
        query = con.sql(_SQL, params={**params, "columns": columns, "start": start})
        yield from query.to_arrow_reader(batch_size)
    except (duckdb.InvalidInputException, duckdb.ConversionException) as exc:
        raise _malformed(path, exc) from exc
    except OSError as exc:  # DuckDB errors that cross the Arrow stream arrive as OSError
        if not str(exc).startswith(_MALFORMED):
            raise
        raise _malformed(path, exc) from exc


def _malformed(path: str, exc: Exception) -> SchemaMismatch:
    """The error for a document that cannot be read: the whole file stops."""
    problem = str(exc).strip().rstrip(".")
    return SchemaMismatch(
        f"{path}: {problem}. The file is one JSON document, not JSON lines, so it "
        "cannot be split into records and its bad ones set aside: fix the file (or declare the "
        "column's type under `columns:`), or convert it to JSON lines (one object per line), "
        "where each bad line becomes a dead letter.",
        dependency=path,
    )


def _complete(line: bytes) -> bool:
    """Whether ``line`` is a complete JSON value on its own."""
    try:
        json.loads(line)
    except ValueError:  # UnicodeDecodeError included
        return False
    return True
