"""Built-in destinations."""

from mendflow.sinks.duckdb import DuckDBSink

__all__ = ["DuckDBSink"]
