"""SQLite destination: every batch, its dead letters and its checkpoint in one transaction.

One database file (Python's own ``sqlite3``, in WAL mode so readers never block the load, with
a busy timeout so a short lock elsewhere is waited for) holds the table and, beside it:

- ``_mendflow_checkpoints``: the position committed with the last batch of each pipeline;
- ``_mendflow_batches``: the identity of every committed batch, so one read again is skipped;
- ``_mendflow_dead_letters``: the dead-letter store (``mendflow dlq`` lists and replays it);
- ``_mendflow_schema_versions``: each version of the table's schema, with the diff from the last.

Each load is one ``BEGIN IMMEDIATE`` transaction (the write lock taken up front, so two loaders
queue instead of deadlocking): the schema step, the rows, the dead letters, the checks, the
bookkeeping, then ``COMMIT``. Write modes: ``append`` inserts; ``merge`` upserts on the primary
key (``INSERT ... ON CONFLICT ... DO UPDATE``: the table is made with a unique constraint on
it; a table made without one gets a delete of the batch's keys, then an insert); ``replace``
loads the run into a staging table and ``finish`` swaps it in (``DROP`` + ``RENAME`` in one
transaction). Column types and value conversions: ``_sqlite_rows``; schema drift:
``_sqlite_schema``. Bookkeeping times are ISO 8601 text in UTC, except the dead letters'
(epoch seconds, see ``_sqlite_dlq``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable

import pyarrow as pa

from mendflow._sql import ident
from mendflow.batch import Committed, Load, Position
from mendflow.contracts.schema import Version
from mendflow.sinks import _drift
from mendflow.sinks import _sqlite_audit as _audit
from mendflow.sinks import _sqlite_dlq as _dlq
from mendflow.sinks import _sqlite_rows as _rows
from mendflow.sinks import _sqlite_schema as _schema
from mendflow.sinks._sqlite_dlq import SQLiteDeadLetters
from mendflow.sinks._sqlite_errors import boundary, translate

__all__ = ["COMMITTED", "STAGED", "SQLiteSink"]

COMMITTED, STAGED = "committed", "staged"
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

_META = (
    "CREATE TABLE IF NOT EXISTS _mendflow_checkpoints (pipeline TEXT NOT NULL, "
    "slot TEXT NOT NULL, position TEXT NOT NULL, updated_at TEXT NOT NULL, "
    "PRIMARY KEY (pipeline, slot))",
    "CREATE TABLE IF NOT EXISTS _mendflow_batches (n INTEGER PRIMARY KEY, "
    "pipeline TEXT NOT NULL, batch_id TEXT NOT NULL, run_id TEXT NOT NULL, "
    "rows INTEGER NOT NULL, dead_letters INTEGER NOT NULL, committed_at TEXT NOT NULL, "
    "UNIQUE (pipeline, batch_id))",
    *_dlq.DDL,
    *_schema.DDL,
)


class SQLiteSink:
    """Load into ``table`` of the SQLite file at ``path`` (created if missing).

    ``busy_timeout_s`` is how long a statement waits for another connection's lock before the
    load fails as ``DestinationUnavailable`` (and is retried by the destination's policy).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str,
        busy_timeout_s: float = 5.0,
        name: str = "",
    ) -> None:
        self.path = os.fspath(path)
        self.table = table
        self.busy_timeout_s = busy_timeout_s
        self.name = name or f"sqlite:{self.path}"
        self._con: sqlite3.Connection | None = None

    # -- the Sink interface -------------------------------------------------------------------

    def position(self, pipeline: str, *, mode: str = "append") -> Position:
        """The committed position of ``pipeline``; for replace, that of the staging in progress."""
        con = self._connect()
        try:
            if mode == "replace":
                staged = self._slot(con, pipeline, STAGED)
                if staged is None:
                    con.execute(f"DROP TABLE IF EXISTS {ident(self._staging)}")
                return staged or {}
            return self._slot(con, pipeline, COMMITTED) or {}
        except sqlite3.Error as exc:
            raise translate(exc, f"reading the checkpoint of {pipeline}", dependency=self.name
                            ) from exc

    def write(
        self, load: Load, *, on_staged: Callable[[], None] = lambda: None
    ) -> Committed | None:
        """Commit the batch's rows, dead letters and position together; None if already done.

        Inside the transaction, in order: the table's schema meets the batch's (drift policy),
        the rows go in, the dead letters go in, the checks audit the batch, the checkpoint moves.
        A failed blocking check rolls all of it back.
        """
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            if self._seen(con, load):
                con.execute("ROLLBACK")
                return None
            target = self._staging if load.mode == "replace" else self.table
            rows, stored, dead, changes = load.data, load.data, load.dead_letters, None
            if load.data.num_columns:
                shaped = _schema.reconcile(con, target, load)
                rows, stored, changes = shaped.rows, shaped.data, shaped.changes
                dead = _concat(dead, shaped.dead_letters)
                if stored.num_rows and load.mode == "merge" and load.primary_key:
                    _rows.merge(con, target, stored, load.primary_key, shaped.columns)
                elif stored.num_rows:
                    _rows.insert(con, target, stored)
            _dlq.add(con, load, dead)
            findings = _audit.audit(con, target, load, rows, stored, dead)
            self._write_bookkeeping(con, load, rows.num_rows, dead.num_rows)
            on_staged()
            con.execute("COMMIT")
        except BaseException as exc:
            _rollback(con)
            doing = f"loading batch {load.batch_id} into {self.table}"
            error = boundary(exc, doing, dependency=self.name)
            if error is None:
                raise
            raise error from exc
        _audit.report(load, findings)
        if changes is not None:
            _drift.report(load, changes)
        return Committed(rows.num_rows, dead.num_rows)

    def finish(self, pipeline: str, *, mode: str = "append") -> None:
        """For replace, swap the staging table in and promote its position, atomically."""
        if mode != "replace":
            return
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            staged = self._slot(con, pipeline, STAGED)
            if staged is not None and self._exists(con, self._staging):
                con.execute(f"DROP TABLE IF EXISTS {ident(self.table)}")
                con.execute(f"ALTER TABLE {ident(self._staging)} RENAME TO {ident(self.table)}")
            elif self._exists(con, self.table):
                con.execute(f"DELETE FROM {ident(self.table)}")
            self._save_slot(con, pipeline, COMMITTED, staged or {})
            con.execute("DELETE FROM _mendflow_checkpoints WHERE pipeline = ? AND slot = ?",
                        [pipeline, STAGED])
            con.execute("DELETE FROM _mendflow_batches WHERE pipeline = ?", [pipeline])
            con.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(con)
            doing = f"publishing the replacement of {self.table}"
            raise translate(exc, doing, dependency=self.name) from exc

    def dead_letters(self) -> SQLiteDeadLetters:
        """The dead-letter store kept beside the table (see ``mendflow.deadletter``)."""
        return SQLiteDeadLetters(self._connect, name=self.name)

    def schema_history(self) -> list[Version]:
        """Every version of the table's schema, oldest first, with its diff from the last."""
        try:
            return _schema.history(self._connect(), self.table)
        except sqlite3.Error as exc:
            raise translate(exc, "reading the schema history", dependency=self.name) from exc

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed into the file by the last one out)."""
        if self._con is not None:
            self._con.close()
            self._con = None

    # -- internals ----------------------------------------------------------------------------

    @property
    def _staging(self) -> str:
        return f"_mendflow_stage__{self.table}"

    def _connect(self) -> sqlite3.Connection:
        if self._con is None:
            con = None
            try:
                con = sqlite3.connect(
                    self.path, timeout=self.busy_timeout_s, isolation_level=None,
                    check_same_thread=False,  # the runner calls from one thread at a time
                )
                _prepare(con)
            except BaseException as exc:
                if con is not None:
                    con.close()  # half-prepared: the next call starts over
                if isinstance(exc, sqlite3.Error):
                    raise translate(exc, f"opening {self.path}", dependency=self.name) from exc
                raise
            self._con = con
        return self._con

    def _slot(self, con: sqlite3.Connection, pipeline: str, slot: str) -> Position | None:
        row = con.execute(
            "SELECT position FROM _mendflow_checkpoints WHERE pipeline = ? AND slot = ?",
            [pipeline, slot],
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def _save_slot(
        self, con: sqlite3.Connection, pipeline: str, slot: str, position: Position
    ) -> None:
        con.execute(
            f"INSERT OR REPLACE INTO _mendflow_checkpoints VALUES (?, ?, ?, {_NOW})",
            [pipeline, slot, json.dumps(position, sort_keys=True)],
        )

    def _seen(self, con: sqlite3.Connection, load: Load) -> bool:
        row = con.execute(
            "SELECT 1 FROM _mendflow_batches WHERE pipeline = ? AND batch_id = ?",
            [load.pipeline, load.batch_id],
        ).fetchone()
        return row is not None

    def _exists(self, con: sqlite3.Connection, table: str) -> bool:
        row = con.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [table]
        ).fetchone()
        return row is not None

    def _write_bookkeeping(
        self, con: sqlite3.Connection, load: Load, rows: int, dead_letters: int
    ) -> None:
        con.execute(
            "INSERT INTO _mendflow_batches (pipeline, batch_id, run_id, rows, dead_letters, "
            f"committed_at) VALUES (?, ?, ?, ?, ?, {_NOW})",
            [load.pipeline, load.batch_id, load.run_id, rows, dead_letters],
        )
        if load.position is not None:
            slot = STAGED if load.mode == "replace" else COMMITTED
            self._save_slot(con, load.pipeline, slot, load.position)


def _prepare(con: sqlite3.Connection) -> None:
    """WAL, full sync at commit, the functions the dead-letter queries use, the tables."""
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = FULL")
    con.create_function("now", 0, time.time)
    con.create_function("to_timestamp", 1, float, deterministic=True)
    con.execute("BEGIN IMMEDIATE")
    try:
        for statement in _META:
            con.execute(statement)
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)
        raise


def _concat(dead: pa.Table, more: pa.Table) -> pa.Table:
    return pa.concat_tables([dead, more]) if more.num_rows else dead


def _rollback(con: sqlite3.Connection) -> None:
    # No transaction open (SQLite already rolled back), or the connection gone: nothing to undo.
    with contextlib.suppress(sqlite3.Error):
        if con.in_transaction:
            con.execute("ROLLBACK")
