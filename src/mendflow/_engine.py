"""The in-memory DuckDB that parses files, casts declared types and runs SQL transforms.

One database per process, with one memory limit, shared through cursors: each thread (the reader
thread, the runner) takes its own cursor, and registered Arrow tables stay private to it. The
limit is ``$MENDFLOW_MEMORY_LIMIT`` (DuckDB syntax, e.g. ``512MB``), 256MB by default; DuckDB's
own default (80 % of RAM) suits analytics, not a loader that streams.
"""

from __future__ import annotations

import os
import threading

import duckdb

from mendflow.exceptions import ConfigError

ENV = "MENDFLOW_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "256MB"

_lock = threading.Lock()
_database: duckdb.DuckDBPyConnection | None = None


def cursor() -> duckdb.DuckDBPyConnection:
    """A new connection to the shared in-memory database; close it when done."""
    global _database
    with _lock:
        if _database is None:
            limit = os.environ.get(ENV, DEFAULT_MEMORY_LIMIT)
            try:
                _database = duckdb.connect(config={"memory_limit": limit})
            except duckdb.Error as exc:
                raise ConfigError(
                    f"{ENV}={limit!r} is not a memory size DuckDB accepts; use e.g. 512MB."
                ) from exc
        return _database.cursor()
