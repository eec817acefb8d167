"""A starting contract drafted from a sample of a data file, for a person to review.

DuckDB reads the first ``sample`` rows (JSON lines, CSV or Parquet, told by the file's suffix)
and detects each column's type. A column with no null in the sample is marked
``nullable: false``; a text column with at most ``MAX_CHOICES`` distinct values over at least
``MIN_ROWS_FOR_CHOICES`` values gets ``in:`` those values; the first column that looks like a key
(``id`` or ``*_id``) and is distinct and never null in the sample becomes ``unique``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from mendflow import _engine
from mendflow._sql import ident
from mendflow.contracts.contract import Column, Contract, OneOf
from mendflow.exceptions import ConfigError

__all__ = ["MAX_CHOICES", "MIN_ROWS_FOR_CHOICES", "infer", "render"]

MAX_CHOICES = 10
MIN_ROWS_FOR_CHOICES = 100
_READERS = {
    "jsonl": "read_json($path, format = 'auto')",
    "csv": "read_csv($path)",
    "parquet": "read_parquet($path)",
}
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
             ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_TYPES = {
    "BIGINT": "bigint", "INTEGER": "bigint", "SMALLINT": "bigint", "TINYINT": "bigint",
    "UBIGINT": "bigint", "UINTEGER": "bigint", "USMALLINT": "bigint", "UTINYINT": "bigint",
    "HUGEINT": "decimal(38,0)", "DOUBLE": "double", "FLOAT": "double", "BOOLEAN": "boolean",
    "DATE": "date", "TIMESTAMP": "timestamp", "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "VARCHAR": "varchar", "JSON": "json",
}
_HEADER = """\
# A starting contract inferred by `mendflow contract infer` from {rows} sampled rows of
# {source}.
# Review it before use: the sample may miss nulls, values and ranges that real data has.
# Add checks (min/max, regex, min_length/max_length, expressions) where you know the rules.
"""


def infer(path: str | os.PathLike[str], *, sample: int = 10_000) -> Contract:
    """A contract drafted from the first ``sample`` rows of the data file at ``path``."""
    return _infer(path, sample)[0]


def render(path: str | os.PathLike[str], *, sample: int = 10_000) -> str:
    """The drafted contract as YAML (a ``contract:`` block) under a comment saying what it is."""
    contract, rows = _infer(path, sample)
    body = yaml.safe_dump({"contract": contract.to_spec()}, sort_keys=False,
                          default_flow_style=None, allow_unicode=True, width=100)
    return _HEADER.format(rows=rows, source=Path(path).name) + body


def _infer(path: str | os.PathLike[str], sample: int) -> tuple[Contract, int]:
    if sample < 1:
        raise ConfigError(f"--sample must be at least 1, not {sample}.")
    file = str(path)
    if not os.path.isfile(file):
        raise ConfigError(f"file not found: {file}; give the path of a data file to sample.")
    reader = _READERS[_format_of(file)]
    con = _engine.cursor()
    try:
        sql = f"SELECT * FROM {reader} LIMIT $sample"
        params = {"path": file, "sample": sample}
        try:
            kinds = con.sql(f"DESCRIBE {sql}", params=params).fetchall()
            types = {str(row[0]): _type_name(str(row[1])) for row in kinds}
            stats = _stats(con, sql, params, list(types))
            columns = {name: _column(con, sql, params, name, kind, stats[name])
                       for name, kind in types.items()}
        except Exception as exc:  # any reading failure: say which file, plainly
            raise ConfigError(f"{file}: cannot sample it: {exc}") from exc
    finally:
        con.close()
    rows = stats["__rows"][0] if stats else 0
    key = next((n for n in columns if _looks_like_key(n) and stats[n] == (rows, rows, rows)
                and rows), None)
    return Contract(columns, unique=(key,) if key else ()), rows


def _stats(
    con: Any, sql: str, params: dict[str, Any], names: list[str]
) -> dict[str, tuple[int, int, int]]:
    """Per column: (rows, non-null values, distinct values) in the sample."""
    parts = [f"count({ident(n)}), count(DISTINCT {ident(n)})" for n in names]
    row = con.sql(f"SELECT count(*), {', '.join(parts) or '0'} FROM ({sql})",
                  params=params).fetchall()[0]
    rows = int(row[0])
    stats = {n: (rows, int(row[1 + 2 * i]), int(row[2 + 2 * i])) for i, n in enumerate(names)}
    stats["__rows"] = (rows, rows, rows)
    return stats


def _column(con: Any, sql: str, params: dict[str, Any], name: str, kind: str,
            stats: tuple[int, int, int]) -> Column:
    rows, values, distinct = stats
    checks: tuple[OneOf, ...] = ()
    if kind == "varchar" and values >= MIN_ROWS_FOR_CHOICES and 0 < distinct <= MAX_CHOICES:
        found = con.sql(
            f"SELECT DISTINCT {ident(name)} AS v FROM ({sql}) WHERE v IS NOT NULL ORDER BY v",
            params=params,
        ).fetchall()
        checks = (OneOf(tuple(str(v[0]) for v in found)),)
    return Column(kind, nullable=not rows or values < rows, checks=checks)


def _type_name(duckdb_type: str) -> str:
    if duckdb_type.startswith("DECIMAL"):
        return duckdb_type.lower().replace(" ", "")
    if duckdb_type in _TYPES:
        return _TYPES[duckdb_type]
    if duckdb_type.endswith("[]") or duckdb_type.startswith(("STRUCT", "MAP")):
        return "json"
    return "varchar"


def _looks_like_key(name: str) -> bool:
    lowered = name.lower()
    return lowered == "id" or lowered.endswith("_id")


def _format_of(path: str) -> str:
    suffix = Path(path[:-3] if path.endswith(".gz") else path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ConfigError(
            f"cannot tell the format of {path} from its suffix; name it .jsonl, .csv or "
            ".parquet."
        )
    return _SUFFIXES[suffix]
