"""CSV rows DuckDB could not parse (ragged, not UTF-8, a value that does not cast), as dead
letters holding the row's original line, byte-exact.

DuckDB's ``read_csv(..., store_rejects = true)`` keeps going past a bad row and records it in a
temporary table of this cursor; its ``csv_line`` has invalid bytes replaced, so the record is
read back from the file at the line's byte position.
"""

from __future__ import annotations

import itertools

import duckdb
import pyarrow as pa

from mendflow.batch import DEAD_LETTER_SCHEMA
from mendflow.sources._lines import open_binary

_names = itertools.count()
_REJECTS = (
    "SELECT line, line_byte_position AS pos, "
    "string_agg(DISTINCT lower(error_type) || ': ' || error_message, '; ') AS why, "
    "to_json(list({{'check': lower(error_type), 'column': column_name, "
    "'message': error_message}})) AS checks "
    "FROM {table} GROUP BY ALL ORDER BY pos"
)


def reader_sql(*, typed: bool) -> tuple[str, str]:
    """The SELECT reading the file bound as ``$path`` from row ``$start`` (its rejects kept in a
    table of a fresh name), and that table's name."""
    number = next(_names)
    table, scans = f"__mf_csv_rejects_{number}", f"__mf_csv_scans_{number}"
    types = ", types = $columns" if typed else ""
    sql = (
        f"SELECT * FROM read_csv($path, store_rejects = true, rejects_table = '{table}', "
        f"rejects_scan = '{scans}'{types}) OFFSET $start"
    )
    return sql, table


def rejects(con: duckdb.DuckDBPyConnection, path: str, table: str) -> pa.Table:
    """The rows the read set aside, as dead letters of stage ``parse``; drops their tables."""
    try:
        found = con.sql(_REJECTS.format(table=table)).fetchall()
    finally:
        scans = table.replace("_rejects_", "_scans_")
        con.execute(f"DROP TABLE IF EXISTS {table}")
        con.execute(f"DROP TABLE IF EXISTS {scans}")
    lines = _lines_at(path, [int(at) for _, at, _, _ in found])
    return pa.table(
        [
            pa.array(range(len(found)), pa.int64()),
            pa.array(["parse"] * len(found), pa.string()),
            pa.array([f"line {line}: {why}" for line, _, why, _ in found], pa.string()),
            pa.array([str(checks) for *_, checks in found], pa.string()),
            pa.array(lines, pa.binary()),
            pa.array(["csv"] * len(found), pa.string()),
        ],
        schema=DEAD_LETTER_SCHEMA,
    )


def _lines_at(path: str, offsets: list[int]) -> list[bytes]:
    """The line at each of DuckDB's line positions, without its terminator (for the few bad
    rows). DuckDB's position is one past the line's start, or (after a CRLF) at its start."""
    out = []
    with open_binary(path, buffered=True) as stream:
        for offset in offsets:
            stream.seek(max(offset - 1, 0))
            line = stream.readline()
            if line == b"\n":
                line = stream.readline()
            out.append(line[:-2] if line.endswith(b"\r\n") else line.rstrip(b"\n"))
    return out
