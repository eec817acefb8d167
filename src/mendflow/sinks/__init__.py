"""Built-in destinations. ``mendflow.sinks.postgres.PostgresSink`` needs the ``postgres`` extra
(psycopg), so it is imported from its module."""

from mendflow.sinks.duckdb import DuckDBSink
from mendflow.sinks.parquet import ParquetSink
from mendflow.sinks.sqlite import SQLiteSink

__all__ = ["DuckDBSink", "ParquetSink", "SQLiteSink"]
