"""The dead-letter store in a DuckDB destination: written in each load's own transaction."""

from __future__ import annotations

import contextlib

import duckdb
import pyarrow as pa

from mendflow.batch import Load

_DEAD = "__mf_dead"

DDL: tuple[str, ...] = (
    "CREATE SEQUENCE IF NOT EXISTS _mendflow_dead_letter_ids",
    "CREATE TABLE IF NOT EXISTS _mendflow_dead_letters ("
    "id BIGINT PRIMARY KEY DEFAULT nextval('_mendflow_dead_letter_ids'), "
    "pipeline VARCHAR NOT NULL, run_id VARCHAR NOT NULL, batch_id VARCHAR NOT NULL, "
    "row_index BIGINT NOT NULL, stage VARCHAR NOT NULL, reason VARCHAR NOT NULL, "
    "checks VARCHAR, record BLOB, format VARCHAR NOT NULL, attempts INTEGER NOT NULL, "
    "first_seen TIMESTAMPTZ NOT NULL, last_seen TIMESTAMPTZ NOT NULL)",
)


def add(con: duckdb.DuckDBPyConnection, load: Load, dead: pa.Table) -> None:
    """Insert the load's dead letters (attempt 1)."""
    if not dead.num_rows:
        return
    con.register(_DEAD, dead)
    try:
        con.execute(
            "INSERT INTO _mendflow_dead_letters (pipeline, run_id, batch_id, row_index, stage, "
            "reason, checks, record, format, attempts, first_seen, last_seen) "
            f"SELECT ?, ?, ?, row_index, stage, reason, checks, record, format, 1, now(), now() "
            f"FROM {_DEAD}",
            [load.pipeline, load.run_id, load.batch_id],
        )
    finally:
        with contextlib.suppress(duckdb.TransactionException):
            con.unregister(_DEAD)
