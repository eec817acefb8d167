"""The ``destination:`` of a pipeline file: which sink, built from its keys.

    destination: {type: duckdb, path: warehouse.duckdb, table: orders}
    destination: {type: postgres, url: "${WAREHOUSE_URL}", table: orders, schema: raw}
    destination: {type: sqlite, path: warehouse.sqlite, table: orders}
    destination: {type: parquet, path: lake/orders}

A PostgreSQL ``url`` may name environment variables as ``${NAME}`` (a password kept out of the
file); left out, it is ``$MENDFLOW_PG_URL``, else libpq's own variables (``PGHOST``,
``PGPASSWORD``...). Sinks are imported when named, so a missing driver only matters to its users.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mendflow._validate import as_string, required, typed
from mendflow.exceptions import ConfigError
from mendflow.typing import Sink

__all__ = ["DESTINATIONS", "destination", "expand_env", "path_in"]

DESTINATIONS: dict[str, set[str]] = {
    "duckdb": {"type", "path", "table", "breaker"},
    "postgres": {"type", "url", "table", "schema", "breaker", "statement_timeout_s"},
    "sqlite": {"type", "path", "table", "breaker"},
    "parquet": {"type", "path", "breaker"},
}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def destination(spec: Any, base: Path, where: str) -> Sink:
    """Build the sink ``spec`` declares (paths relative to ``base``)."""
    kind = typed(spec, DESTINATIONS, where)
    if kind == "postgres":
        from mendflow.sinks.postgres import PostgresSink

        required(spec, ("table",), where)
        url = spec.get("url")
        timeout = spec.get("statement_timeout_s")
        return PostgresSink(
            None if url is None else expand_env(as_string(url, f"{where}.url"), f"{where}.url"),
            table=as_string(spec["table"], f"{where}.table"),
            schema=as_string(spec.get("schema", "public"), f"{where}.schema"),
            statement_timeout_s=None if timeout is None else float(timeout),
        )
    path = path_in(spec.get("path"), base, f"{where}.path")
    if kind == "parquet":
        from mendflow.sinks.parquet import ParquetSink

        return ParquetSink(path)
    required(spec, ("table",), where)
    table = as_string(spec["table"], f"{where}.table")
    if kind == "sqlite":
        from mendflow.sinks.sqlite import SQLiteSink

        return SQLiteSink(path, table=table)
    from mendflow.sinks.duckdb import DuckDBSink

    return DuckDBSink(path, table=table)


def path_in(value: Any, base: Path, where: str) -> str:
    """``value`` as a path; a relative one is taken from ``base`` (the pipeline file's folder)."""
    text = as_string(value, where)
    return text if os.path.isabs(text) else str(base / text)


def expand_env(text: str, where: str) -> str:
    """Replace each ``${NAME}`` in ``text`` with that environment variable; an unset one is an
    error that names it (the value is never shown)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{where} names ${{{name}}}, which is not set; export {name}.")
        return os.environ[name]

    return _VAR.sub(value, text)
