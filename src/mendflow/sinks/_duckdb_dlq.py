"""The dead-letter store in a DuckDB destination, written in each load's own transaction.

A run's load inserts its dead letters (attempt 1). A replay's load (``Load.replay_ids`` set:
the dead-letter id of each record of the replayed chunk, by ``row_index``) settles them instead,
in the transaction that inserts the rows: the records that failed again are updated in place
(attempts + 1, last seen now, new stage, reason and checks, record unchanged) and every other
record of the chunk is deleted, being in the table now. So a record leaves the store exactly
when it is loaded, and a rolled-back load leaves both as they were.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import duckdb
import pyarrow as pa

from mendflow.batch import Load
from mendflow.deadletter import DeadLetter, Filter, parse_checks
from mendflow.exceptions import SchemaMismatch
from mendflow.sinks._duckdb_errors import translate

_DEAD, _IDS = "__mf_dead", "__mf_replay_ids"
_TABLE = "_mendflow_dead_letters"
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
        con.execute(
            f"INSERT INTO {_TABLE} (pipeline, run_id, batch_id, row_index, stage, reason, "
            "checks, record, format, attempts, first_seen, last_seen) "
            "SELECT ?, ?, ?, row_index, stage, reason, checks, record, format, 1, now(), now() "
            f"FROM {_DEAD}",
            [load.pipeline, load.run_id, load.batch_id],
        )


def _settle(con: duckdb.DuckDBPyConnection, load: Load, dead: pa.Table) -> None:
    """Update the replayed records that failed again, delete the others (loaded now).

    Dead letters the sink added itself (a drift policy setting rows aside) point at rows of
    ``load.data``; the replay lays its records out loaded-first, so those indexes are the
    records' own when the transforms kept one row per record. When they did not, such rows go
    in as new dead letters rather than be matched to the wrong record.
    """
    ids = pa.table({"pos": pa.array(range(len(load.replay_ids)), pa.int64()),
                    "id": pa.array(load.replay_ids, pa.int64())})
    own = load.dead_letters.num_rows
    extra = dead.slice(own)
    loaded_count = len(load.replay_ids) - own
    if extra.num_rows and load.data.num_rows != loaded_count:
        _insert(con, load, extra)
        dead = dead.slice(0, own)
    with _registered(con, _IDS, ids), _registered(con, _DEAD, dead):
        con.execute(
            f"UPDATE {_TABLE} AS d SET attempts = d.attempts + 1, last_seen = now(), "
            "stage = f.stage, reason = f.reason, checks = f.checks "
            f"FROM (SELECT DISTINCT ON (x.row_index) i.id, x.stage, x.reason, x.checks FROM "
            f"{_DEAD} x JOIN {_IDS} i ON i.pos = x.row_index ORDER BY x.row_index) f "
            "WHERE d.id = f.id AND d.pipeline = ?",
            [load.pipeline],
        )
        con.execute(
            f"DELETE FROM {_TABLE} WHERE pipeline = ? AND id IN (SELECT id FROM {_IDS} "
            f"WHERE pos NOT IN (SELECT row_index FROM {_DEAD}))",
            [load.pipeline],
        )


@contextlib.contextmanager
def _registered(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> Iterator[None]:
    con.register(name, table)
    try:
        yield
    finally:  # in an aborted transaction DuckDB refuses; the rollback drops the view
        with contextlib.suppress(duckdb.TransactionException):
            con.unregister(name)


_SELECT = (
    "SELECT id, pipeline, run_id, batch_id, row_index, stage, reason, checks, record, format, "
    f"attempts, epoch(first_seen), epoch(last_seen) FROM {_TABLE}"
)


class DuckDBDeadLetters:
    """The dead letters of a DuckDB destination (``DeadLetterStore``), through the sink's
    connection (``connect``); ``name`` is the destination's, for errors."""

    def __init__(self, connect: Callable[[], duckdb.DuckDBPyConnection], *, name: str) -> None:
        self._connect = connect
        self._name = name

    def _guard(self, call: Callable[[], Any], doing: str) -> Any:
        try:
            return call()
        except duckdb.Error as exc:
            raise translate(exc, doing, dependency=self._name) from exc

    def _rows(self, query: str, params: builtins.list[Any], doing: str
              ) -> builtins.list[tuple[Any, ...]]:
        rows: builtins.list[tuple[Any, ...]] = self._guard(
            lambda: self._connect().execute(query, params).fetchall(), doing)
        return rows

    def list(self, where: Filter | None = None) -> builtins.list[DeadLetter]:
        """The dead letters selected (None: all), oldest id first."""
        sql, params = _where(where or Filter())
        rows = self._rows(f"{_SELECT} WHERE {sql} ORDER BY id", params, "listing dead letters")
        return [_letter(row) for row in rows]

    def get(self, id: int) -> DeadLetter | None:
        """One dead letter, or None."""
        found = self.list(Filter(ids=(id,)))
        return found[0] if found else None

    def purge(self, where: Filter) -> int:
        """Delete the dead letters selected; return how many."""
        sql, params = _where(where)

        def purge() -> int:
            row = self._connect().execute(
                f"DELETE FROM {_TABLE} WHERE {sql} RETURNING id", params).fetchall()
            return len(row)

        count: int = self._guard(purge, "purging dead letters")
        return count

    def tried(self, ids: Sequence[int]) -> None:
        """Count one more attempt for ``ids`` (a replay of theirs was rolled back)."""

        def bump() -> None:
            self._connect().execute(
                f"UPDATE {_TABLE} SET attempts = attempts + 1, last_seen = now() "
                "WHERE id IN (SELECT unnest(?::BIGINT[]))", [list(ids)])

        self._guard(bump, "counting a replay attempt")

    def export(self, where: Filter, out: IO[str]) -> int:
        """Write the dead letters selected to ``out`` as JSON lines; return how many."""
        count = 0
        for chunk in self.pending(where, max_attempts=None, size=10_000):  # bounded memory
            out.writelines(json.dumps(x.as_dict(), ensure_ascii=False) + "\n" for x in chunk)
            count += len(chunk)
        return count

    def pending(
        self, where: Filter, *, max_attempts: int | None, size: int
    ) -> Iterator[builtins.list[DeadLetter]]:
        """Chunks of at most ``size`` with fewer than ``max_attempts`` attempts, by id."""
        after, left = -1, where.limit
        sql, base = _where(dataclasses.replace(where, limit=None))
        if max_attempts is not None:
            sql, base = f"{sql} AND attempts < ?", [*base, max_attempts]
        query = f"{_SELECT} WHERE {sql} AND id > ? ORDER BY id LIMIT ?"
        while left is None or left > 0:
            params = [*base, after, size if left is None else min(size, left)]
            rows = self._rows(query, params, "reading dead letters to replay")
            if not rows:
                return
            chunk = [_letter(row) for row in rows]
            yield chunk
            after = chunk[-1].id
            left = None if left is None else left - len(chunk)

    def count(self, where: Filter, *, min_attempts: int) -> int:
        """How many selected dead letters have at least ``min_attempts`` attempts."""
        sql, params = _where(where)
        row = self._guard(lambda: self._connect().execute(
            f"SELECT count(*) FROM {_TABLE} WHERE {sql} AND attempts >= ?",
            [*params, min_attempts]).fetchone(), "counting dead letters")
        return int(row[0]) if row else 0


def _where(where: Filter) -> tuple[str, list[Any]]:
    """The SQL condition for ``where`` and its bound values."""
    terms: list[str] = []
    params: list[Any] = []
    for sql, value in (
        ("pipeline = ?", where.pipeline),
        ("stage = ?", where.stage),
        ("list_contains(json_extract_string(checks, '$[*].check'), ?)", where.check),
        ("last_seen >= to_timestamp(CAST(? AS DOUBLE))", where.since),
        ("last_seen < to_timestamp(CAST(? AS DOUBLE))", where.until),
    ):
        if value is not None:
            terms.append(sql)
            params.append(value)
    if where.ids:
        terms.append("list_contains(CAST(? AS BIGINT[]), id)")
        params.append(list(where.ids))
    condition = " AND ".join(terms) or "true"
    if where.limit is not None:
        condition = f"id IN (SELECT id FROM {_TABLE} WHERE {condition} ORDER BY id LIMIT ?)"
        params.append(where.limit)
    return condition, params


def _letter(row: tuple[Any, ...]) -> DeadLetter:
    return DeadLetter(
        id=int(row[0]), pipeline=row[1], run_id=row[2], batch_id=row[3], row_index=int(row[4]),
        stage=row[5], reason=row[6], checks=parse_checks(row[7]), record=bytes(row[8] or b""),
        format=row[9], attempts=int(row[10]), first_seen=float(row[11]),
        last_seen=float(row[12]),
    )
