"""The dead-letter store in a DuckDB destination, written in each load's own transaction.

A run's load inserts its dead letters (attempt 1). A replay's load (``Load.replay_ids`` set:
the dead-letter id of each record of the replayed chunk, by ``row_index``) settles them instead,
in the transaction that inserts the rows: the records that failed again are updated in place
(attempts + 1, last seen now, new stage, reason and checks, record unchanged) and every other
record of the chunk is deleted, being in the table now. So a record leaves the store exactly
when it is loaded, and a rolled-back load leaves both as they were.

The queries, the settlement and the store's methods are shared with the other SQL destinations
(``mendflow.sinks._dlq``); this module holds DuckDB's table, its migration and its rendering.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from mendflow.batch import Load
from mendflow.exceptions import SchemaMismatch
from mendflow.sinks._dlq import (
    DELETE_LOADED,
    INSERT,
    TABLE,
    UPDATE_FAILED,
    SqlDeadLetters,
    settlement,
)
from mendflow.sinks._duckdb_errors import translate

_DEAD, _IDS = "__mf_dead", "__mf_replay_ids"
_TABLE = TABLE
_COLUMNS = (
    "id BIGINT PRIMARY KEY DEFAULT nextval('_mendflow_dead_letter_ids'), "
    "pipeline VARCHAR NOT NULL, run_id VARCHAR NOT NULL, batch_id VARCHAR NOT NULL, "
    "row_index BIGINT NOT NULL, stage VARCHAR NOT NULL, reason VARCHAR NOT NULL, "
    "checks VARCHAR, record BLOB, format VARCHAR NOT NULL, attempts INTEGER NOT NULL, "
    "first_seen TIMESTAMPTZ NOT NULL, last_seen TIMESTAMPTZ NOT NULL"
)

DDL: tuple[str, ...] = (
    "CREATE SEQUENCE IF NOT EXISTS _mendflow_dead_letter_ids",
    f"CREATE TABLE IF NOT EXISTS {_TABLE} ({_COLUMNS})",
)

#: The table as versions before 0.4 made it: no id, the record as text, one time.
_V1 = ("pipeline", "batch_id", "row_index", "run_id", "stage", "reason", "record", "created_at")
_MIGRATE_V1 = (
    f"ALTER TABLE {_TABLE} RENAME TO _mendflow_dead_letters_v1",
    *DDL,
    f"INSERT INTO {_TABLE} (pipeline, run_id, batch_id, row_index, stage, reason, checks, "
    "record, format, attempts, first_seen, last_seen) SELECT coalesce(pipeline, ''), "
    "coalesce(run_id, ''), coalesce(batch_id, ''), coalesce(row_index, 0), coalesce(stage, "
    "'coerce'), coalesce(reason, ''), NULL, encode(record), 'json', 1, "
    "coalesce(created_at, now()), coalesce(created_at, now()) "
    "FROM _mendflow_dead_letters_v1 ORDER BY created_at, batch_id, row_index",
    "DROP TABLE _mendflow_dead_letters_v1",
)


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Bring a dead-letter table made by an older version to this one's shape, atomically."""
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = ?",
        [_TABLE],
    ).fetchall()
    columns = tuple(r[0] for r in rows)
    if not columns or "id" in columns:
        return
    if set(columns) != set(_V1):
        raise SchemaMismatch(
            f"{_TABLE} has columns this version does not know ({', '.join(columns)}); rename "
            "it (ALTER TABLE ... RENAME TO ...) so mendflow can create its own, then copy what "
            "you need across.",
            dependency=_TABLE,
        )
    con.begin()
    try:
        for statement in _MIGRATE_V1:
            con.execute(statement)
        con.commit()
    except BaseException:
        con.rollback()
        raise


def add(con: duckdb.DuckDBPyConnection, load: Load, dead: pa.Table) -> None:
    """Insert the load's dead letters (attempt 1), or for a replay settle the replayed ones."""
    if load.replay_ids:
        _settle(con, load, dead)
        return
    if dead.num_rows:
        _insert(con, load, dead)


def _insert(con: duckdb.DuckDBPyConnection, load: Load, dead: pa.Table) -> None:
    with _registered(con, _DEAD, dead):
        con.execute(_render(INSERT), [load.pipeline, load.run_id, load.batch_id])


def _settle(con: duckdb.DuckDBPyConnection, load: Load, dead: pa.Table) -> None:
    """Update the replayed records that failed again, delete the others (loaded now)."""
    new, again, ids = settlement(load, dead)
    if new.num_rows:
        _insert(con, load, new)
    with _registered(con, _IDS, ids), _registered(con, _DEAD, again):
        con.execute(_render(UPDATE_FAILED), [load.pipeline])
        con.execute(_render(DELETE_LOADED), [load.pipeline])


@contextlib.contextmanager
def _registered(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> Iterator[None]:
    con.register(name, table)
    try:
        yield
    finally:  # in an aborted transaction DuckDB refuses; the rollback drops the view
        with contextlib.suppress(duckdb.TransactionException):
            con.unregister(name)


def _render(template: str) -> str:
    return template.format(table=_TABLE, dead=_DEAD, ids=_IDS, p="?")


class DuckDBDeadLetters(SqlDeadLetters):
    """The dead letters of a DuckDB destination (``DeadLetterStore``), through the sink's
    connection (``connect``); ``name`` is the destination's, for errors."""

    CHECK = "list_contains(json_extract_string(checks, '$[*].check'), {p})"

    def __init__(self, connect: Callable[[], duckdb.DuckDBPyConnection], *, name: str) -> None:
        self._connect = connect
        self._name = name

    def _fetch(self, template: str, params: Sequence[Any], doing: str
               ) -> list[tuple[Any, ...]]:
        try:
            return self._connect().execute(_render(template), list(params)).fetchall()
        except duckdb.Error as exc:
            raise translate(exc, doing, dependency=self._name) from exc
