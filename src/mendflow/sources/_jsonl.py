"""JSON lines parsed a chunk at a time; a line that does not parse is a dead letter, byte-exact.

The column types are read_json's detection over the file's first good lines (declared columns
as VARCHAR). A chunk first takes the fast path: one ``json_transform_strict`` over all its lines,
which raises on anything wrong (invalid UTF-8 caught by Arrow's cast, a broken line, a value that
does not cast, a missing key) and returns NULL for a ``null`` line. When it cannot be used, the
chunk takes the careful path: DuckDB classifies every line in one pass (UTF-8, size, valid JSON,
an object), the good ones are transformed twice (typed, and as raw JSON, so a value the type
turned into NULL is seen), and reasons are built for the bad lines only.

No value is rounded or converted on the way: see ``sources/_kinds.py``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mendflow.batch import DEAD_LETTER_SCHEMA, no_dead_letters
from mendflow.sources import _kinds
from mendflow.sources._lines import Lines, read_lines

#: Records read_json samples to detect the types (its own default sample size).
SAMPLE = 20_480
_CLASSIFY = (
    "SELECT CASE WHEN s IS NULL THEN 'utf8' WHEN n > $limit THEN 'size' "
    "WHEN NOT json_valid(s) THEN 'json' WHEN json_type(s) <> 'OBJECT' THEN json_type(s) "
    "END AS problem FROM (SELECT try(decode(b)) AS s, octet_length(b) AS n FROM __mf_lines)"
)


#: Why a line is not a row: (check, column or None, message).
Reason = tuple[str, str | None, str]
#: Which rows hold a value their column's type does not take, and each row's raw JSON value.
Misfits = tuple[np.ndarray, pa.Array]


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The largest line and the largest field value accepted, in bytes."""

    record_bytes: int
    field_bytes: int


@dataclass(frozen=True, slots=True)
class Parsed:
    """A chunk's rows, their original lines, and the lines set aside."""

    data: pa.Table
    raw: pa.Array
    rejects: pa.Table


def detect(con: duckdb.DuckDBPyConnection, path: str, *, limits: Limits) -> dict[str, str]:
    """read_json's column types for the first good lines of ``path`` ({} if it has none)."""
    for lines in read_lines(path, start=0, line=0, size=SAMPLE):
        good = lines.records.filter(pc.is_null(_classify(con, lines.records, limits)))
        if len(good):
            return _describe(con, good)
    return {}


def parse(
    con: duckdb.DuckDBPyConnection, lines: Lines, *, types: dict[str, str], limits: Limits
) -> Parsed:
    """The chunk's rows typed as ``types`` and its bad lines as dead letters."""
    if not len(lines.records):
        return Parsed(pa.table({}), pa.array([], pa.large_binary()), no_dead_letters())
    data = _fast(con, lines.records, types, limits)
    if data is not None:
        return Parsed(data, lines.records, no_dead_letters())
    return _careful(con, lines, types, limits)


def _fast(
    con: duckdb.DuckDBPyConnection, records: pa.Array, types: dict[str, str], limits: Limits
) -> pa.Table | None:
    """Every line parsed in one strict pass, or None when any line needs a closer look."""
    longest = pc.max(pc.binary_length(records)).as_py()
    if not types or longest > min(limits.record_bytes, limits.field_bytes):
        return None
    try:
        text = records.cast(pa.large_string())
        sql = "SELECT json_transform_strict(s, $structure) AS r FROM __mf_lines"
        structure = json.dumps(_kinds.structure(types))
        column = _query(con, sql, text, structure=structure).column("r")
    except (pa.ArrowInvalid, duckdb.Error):
        return None
    if column.null_count:  # a `null` line
        return None
    values = [_kinds.exact(v, types[c]) for c, v in zip(types, column.flatten(), strict=True)]
    if any(v is None for v in values):
        return None
    return pa.Table.from_arrays(values, names=list(types))


def _careful(
    con: duckdb.DuckDBPyConnection, lines: Lines, types: dict[str, str], limits: Limits
) -> Parsed:
    """Every line classified, the good ones typed, reasons built for the bad ones only."""
    problems = _classify(con, lines.records, limits)
    fine = pc.is_null(problems).to_numpy(zero_copy_only=False)
    good = lines.records.filter(pa.array(fine))
    data, misfits = _transform(con, good, types)
    unfit = _unfit(good, types, misfits, limits)
    keep = np.ones(len(good), dtype=bool)
    keep[list(unfit)] = False
    index = np.flatnonzero(fine)
    reasons = _unparsed(lines.records, problems, limits)
    reasons.update((int(index[j]), found) for j, found in unfit.items())
    kept = pa.array(keep)
    return Parsed(data.filter(kept), good.filter(kept), _rejects(lines, reasons, problems))


def _unparsed(records: pa.Array, problems: pa.Array, limits: Limits) -> dict[int, list[Reason]]:
    """What is wrong with each line that is not a record, by its index in the chunk."""
    bad = np.flatnonzero(pc.is_valid(problems).to_numpy(zero_copy_only=False))
    return {
        int(i): [_problem(problems[int(i)].as_py(), records[int(i)].as_py(), limits)] for i in bad
    }


def _unfit(
    good: pa.Array, types: dict[str, str], misfits: dict[str, Misfits], limits: Limits
) -> dict[int, list[Reason]]:
    """What is wrong with each good line that holds a misfit or an oversized field, by its index
    among the good lines."""
    reasons: dict[int, list[Reason]] = {}
    for column, (mask, raws) in misfits.items():
        for j in np.flatnonzero(mask):
            found = _misfit(column, types[column], raws[int(j)].as_py())
            reasons.setdefault(int(j), []).append(found)
    oversized = pc.greater(pc.binary_length(good), limits.field_bytes)
    for j in np.flatnonzero(oversized.to_numpy(zero_copy_only=False)):
        if found_fields := _oversized(good[int(j)].as_py(), limits):
            reasons.setdefault(int(j), []).extend(found_fields)
    return reasons


def _transform(
    con: duckdb.DuckDBPyConnection, good: pa.Array, types: dict[str, str]
) -> tuple[pa.Table, dict[str, Misfits]]:
    """The good lines typed, and per column which rows hold a value its type does not take (the
    typed value is NULL where the raw one is not) and the raw values."""
    if not types:
        return pa.table({"__mf_row": pa.nulls(len(good))}).drop_columns(["__mf_row"]), {}
    sql = (
        f"SELECT {_kinds.select(types, struct='r')}, j FROM (SELECT json_transform(s, $typed) "
        "AS r, json_transform(s, $raw) AS j FROM __mf_lines)"
    )
    typed, raw = json.dumps(_kinds.structure(types)), json.dumps(dict.fromkeys(types, "JSON"))
    text = good.cast(pa.large_string())  # the classification found them valid UTF-8
    result = _query(con, sql, text, typed=typed, raw=raw)
    values, found = result.columns[: len(types)], result.column(len(types)).flatten()
    data = pa.Table.from_arrays(values, names=list(types))
    misfits = {}
    for name, column, raws in zip(types, values, found, strict=True):
        mask = pc.and_(pc.is_null(column), pc.is_valid(raws)).to_numpy(zero_copy_only=False)
        if mask.any():
            misfits[name] = (mask, raws)
    return data, misfits


def _classify(con: duckdb.DuckDBPyConnection, records: pa.Array, limits: Limits) -> pa.Array:
    """Per line: NULL when it may be a record, else what is wrong with it."""
    result = _query(con, _CLASSIFY, records, limit=limits.record_bytes)
    return result.column("problem").combine_chunks()


def _problem(code: str, record: bytes, limits: Limits) -> Reason:
    """(check, column, message) for a line that is not a record."""
    if code == "utf8":
        return "utf8", None, "not valid UTF-8"
    if code == "size":
        return "max_record_bytes", None, (
            f"the line is {len(record):,} bytes, over the limit of {limits.record_bytes:,} "
            "(max_record_bytes)"
        )
    if code == "json":
        return "json", None, f"not valid JSON: {_json_error(record)}"
    return "object", None, f"a record must be a JSON object, not {code.lower()}"


def _misfit(column: str, kind: str, value: str) -> Reason:
    """The reason for ``value`` (its JSON text) found in ``column`` of type ``kind``."""
    shown = value if len(value) <= 60 else value[:57] + "..."
    return "type", column, (
        f"field `{column}` is {shown}, not {kind} (the type detected for it from the file's "
        "first records); declare the column's type under `columns:` (text keeps any value as "
        "written)"
    )


def _oversized(record: bytes, limits: Limits) -> list[Reason]:
    """A reason for each field of ``record`` over the field limit."""
    return [
        ("max_field_bytes", name, f"field `{name}` is {size:,} bytes, over the limit of "
         f"{limits.field_bytes:,} (max_field_bytes)")
        for name, size in _field_sizes(record)
        if size > limits.field_bytes
    ]


def _json_error(record: bytes) -> str:
    try:
        json.loads(record)
    except ValueError as exc:
        return str(exc)
    return "DuckDB's JSON parser rejects it"


def _field_sizes(record: bytes) -> list[tuple[str, int]]:
    """Each top-level field's size in bytes (a string's own bytes, else its JSON text)."""
    fields = json.loads(record)
    return [
        (name, len(v.encode() if isinstance(v, str) else json.dumps(v).encode()))
        for name, v in fields.items()
    ]


def _rejects(
    lines: Lines,
    reasons: dict[int, list[Reason]],
    problems: pa.Array,
) -> pa.Table:
    rows = sorted(reasons)
    numbers = [int(lines.numbers[i]) for i in rows]
    return pa.table(
        [
            pa.array(rows, pa.int64()),
            pa.array(["parse"] * len(rows), pa.string()),
            pa.array(
                [f"line {n}: " + "; ".join(m for _, _, m in reasons[i])
                 for i, n in zip(rows, numbers, strict=True)],
                pa.string(),
            ),
            pa.array([_checks(reasons[i]) for i in rows], pa.string()),
            pa.array([lines.records[i].as_py() for i in rows], pa.binary()),
            pa.array(["bytes" if problems[i].as_py() == "utf8" else "json" for i in rows]),
        ],
        schema=DEAD_LETTER_SCHEMA,
    )


def _checks(found: Sequence[Reason]) -> str:
    return json.dumps([{"check": c, "column": col, "message": m} for c, col, m in found])


def _describe(con: duckdb.DuckDBPyConnection, good: pa.Array) -> dict[str, str]:
    """read_json's detection over ``good`` lines, written to a scratch file."""
    handle, path = tempfile.mkstemp(suffix=".jsonl", prefix="mendflow-sample-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(b"\n".join(good.to_pylist()))
        sql = "DESCRIBE SELECT * FROM read_json($path, format = 'newline_delimited')"
        return {str(r[0]): str(r[1]) for r in con.sql(sql, params={"path": path}).fetchall()}
    finally:
        os.unlink(path)


def _query(
    con: duckdb.DuckDBPyConnection, sql: str, column: pa.Array, **params: object
) -> pa.Table:
    """``sql`` over ``column`` registered as ``__mf_lines`` (as ``b`` if binary, else ``s``)."""
    name = "s" if pa.types.is_large_string(column.type) else "b"
    con.register("__mf_lines", pa.table({name: column}))
    try:
        return con.sql(sql, params=params or None).to_arrow_table()
    finally:
        con.unregister("__mf_lines")
