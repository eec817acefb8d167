"""Built-in transforms. Any callable taking and returning a ``pyarrow.Table`` is a transform."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from mendflow import _engine
from mendflow.exceptions import ConfigError


class SqlTransform:
    """Reshape a batch with one DuckDB SELECT over the relation ``batch``.

        SqlTransform("SELECT *, amount * qty AS total FROM batch WHERE qty > 0")

    The query must be deterministic (no random(), now()), so a batch read again loads the same.
    """

    def __init__(self, sql: str) -> None:
        if "batch" not in sql.lower():
            raise ConfigError(f"SQL transform {sql!r} does not read `batch`; select FROM batch.")
        self.sql = sql
        self.__name__ = f"sql: {sql[:60]}"
        self._con: duckdb.DuckDBPyConnection | None = None

    def __call__(self, table: pa.Table) -> pa.Table:
        if self._con is None:
            self._con = _engine.cursor()
        self._con.register("batch", table)
        try:
            result: pa.Table = self._con.sql(self.sql).to_arrow_table()
        finally:
            self._con.unregister("batch")
        return result
