"""DuckDB destination: every batch, its dead letters and its checkpoint in one transaction.

Three tables beside the data keep the load exactly-once:

- ``_mendflow_checkpoints``: the position committed with the last batch of each pipeline;
- ``_mendflow_batches``: the identity of every committed batch, so one read again is skipped;
- ``_mendflow_dead_letters``: the dead-letter store: records set aside, with every failed check
  and the original record (``mendflow.deadletter`` lists, replays and purges it);
- ``_mendflow_schema_versions``: each version of each table's schema, with the diff from the last.

Write modes: ``append`` inserts; ``merge`` replaces rows with the same primary key (the runner
hands it batches with one row per key: the last one read); ``replace`` loads the run into a
staging table and swaps it in when the run has read everything, so readers never see a
half-replaced table and a crash resumes the staging.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence

import duckdb
import pyarrow as pa

from mendflow._sql import ident
from mendflow.batch import Committed, Load, Position
from mendflow.sinks import _duckdb_audit as _audit
from mendflow.sinks import _duckdb_dlq as _dlq
from mendflow.sinks import _duckdb_schema as _schema
from mendflow.sinks._duckdb_dlq import DuckDBDeadLetters
from mendflow.sinks._duckdb_errors import ERRORS, translate

__all__ = ["COMMITTED", "ERRORS", "STAGED", "DuckDBSink", "translate"]

COMMITTED, STAGED = "committed", "staged"
_BATCH = "__mf_batch"

_META = (
    "CREATE TABLE IF NOT EXISTS _mendflow_checkpoints (pipeline VARCHAR, slot VARCHAR, "
    "position VARCHAR, updated_at TIMESTAMPTZ, PRIMARY KEY (pipeline, slot))",
    "CREATE TABLE IF NOT EXISTS _mendflow_batches (pipeline VARCHAR, batch_id VARCHAR, "
    "run_id VARCHAR, rows BIGINT, dead_letters BIGINT, committed_at TIMESTAMPTZ, "
    "PRIMARY KEY (pipeline, batch_id))",
    *_dlq.DDL,
    *_schema.DDL,
)


class DuckDBSink:
    """Load into ``table`` of the DuckDB file at ``path`` (created if missing).

    ``memory_limit`` caps DuckDB's buffer pool for this file (DuckDB syntax, e.g. ``1GB``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str,
        memory_limit: str = "256MB",
        name: str = "",
    ) -> None:
        self.path = os.fspath(path)
        self.table = table
        self.memory_limit = memory_limit
        self.name = name or f"duckdb:{self.path}"
        self._con: duckdb.DuckDBPyConnection | None = None
        self._columns: dict[str, _schema.Columns] = {}  # tables' columns as this sink made them

    # -- the Sink interface -------------------------------------------------------------------

    def position(self, pipeline: str, *, mode: str = "append") -> Position:
        """The committed position of ``pipeline``; for replace, that of the staging in progress."""
        con = self._connect()
        if mode == "replace":
            staged = self._slot(con, pipeline, STAGED)
            if staged is None:
                self._run(con, f"DROP TABLE IF EXISTS {ident(self._staging)}")
            return staged or {}
        return self._slot(con, pipeline, COMMITTED) or {}

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
            con.begin()
            if self._seen(con, load):
                con.rollback()
                return None
            target = self._staging if load.mode == "replace" else self.table
            data, dead, columns, changes = load.data, load.dead_letters, None, None
            if data.num_columns:
                shaped = _schema.reconcile(con, target, load, self._columns.get(target))
                data, columns, changes = shaped.data, shaped.columns, shaped.changes
                dead = _concat(dead, shaped.dead_letters)
                if data.num_columns:
                    self._write_rows(con, target, data, load.mode, load.primary_key)
            _dlq.add(con, load, dead)
            findings = _audit.audit(con, target, load, data, dead)
            self._write_bookkeeping(con, load, data.num_rows, dead.num_rows)
            on_staged()
            con.commit()
            if columns is not None:
                self._columns[target] = columns  # known only once the DDL is committed
        except duckdb.Error as exc:
            _rollback(con)
            doing = f"loading batch {load.batch_id} into {self.table}"
            raise translate(exc, doing, dependency=self.name) from exc
        except BaseException:
            _rollback(con)
            raise
        _audit.report(load, findings)
        if changes is not None:
            _schema.report(load, changes)
        return Committed(data.num_rows, dead.num_rows)

    def finish(self, pipeline: str, *, mode: str = "append") -> None:
        """For replace, swap the staging table in and promote its position, atomically."""
        if mode != "replace":
            return
        con = self._connect()
        try:
            con.begin()
            staged = self._slot(con, pipeline, STAGED)
            if staged is not None and self._exists(con, self._staging):
                con.execute(f"DROP TABLE IF EXISTS {ident(self.table)}")
                con.execute(f"ALTER TABLE {ident(self._staging)} RENAME TO {ident(self.table)}")
            elif self._exists(con, self.table):
                con.execute(f"DELETE FROM {ident(self.table)}")
            self._save_slot(con, pipeline, COMMITTED, staged or {})
            con.execute(
                "DELETE FROM _mendflow_checkpoints WHERE pipeline = ? AND slot = ?",
                [pipeline, STAGED],
            )
            con.execute("DELETE FROM _mendflow_batches WHERE pipeline = ?", [pipeline])
            con.commit()
            self._columns.clear()
        except duckdb.Error as exc:
            _rollback(con)
            doing = f"publishing the replacement of {self.table}"
            raise translate(exc, doing, dependency=self.name) from exc

    def dead_letters(self) -> DuckDBDeadLetters:
        """The dead-letter store kept beside the table (see ``mendflow.deadletter``)."""
        return DuckDBDeadLetters(self._connect, name=self.name)

    def schema_history(self) -> list[_schema.Version]:
        """Every version of the table's schema, oldest first, with its diff from the last."""
        return _schema.history(self._connect(), self.table)

    def close(self) -> None:
        """Close the connection (DuckDB checkpoints the file)."""
        self._columns.clear()
        if self._con is not None:
            self._con.close()
            self._con = None

    # -- internals ----------------------------------------------------------------------------

    @property
    def _staging(self) -> str:
        return f"_mendflow_stage__{self.table}"

    def _connect(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            con = None
            try:
                con = duckdb.connect(self.path, config={"memory_limit": self.memory_limit})
                _dlq.migrate(con)
                for statement in _META:
                    con.execute(statement)
            except BaseException as exc:
                if con is not None:
                    con.close()  # half-prepared: the next call starts over
                if isinstance(exc, duckdb.Error):
                    raise translate(exc, f"opening {self.path}", dependency=self.name) from exc
                raise
            self._con = con
        return self._con

    def _run(self, con: duckdb.DuckDBPyConnection, sql: str) -> None:
        try:
            con.execute(sql)
        except duckdb.Error as exc:
            raise translate(exc, f"preparing {self.table}", dependency=self.name) from exc

    def _slot(self, con: duckdb.DuckDBPyConnection, pipeline: str, slot: str) -> Position | None:
        row = con.execute(
            "SELECT position FROM _mendflow_checkpoints WHERE pipeline = ? AND slot = ?",
            [pipeline, slot],
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def _save_slot(
        self, con: duckdb.DuckDBPyConnection, pipeline: str, slot: str, position: Position
    ) -> None:
        con.execute(
            "INSERT OR REPLACE INTO _mendflow_checkpoints VALUES (?, ?, ?, now())",
            [pipeline, slot, json.dumps(position, sort_keys=True)],
        )

    def _seen(self, con: duckdb.DuckDBPyConnection, load: Load) -> bool:
        row = con.execute(
            "SELECT 1 FROM _mendflow_batches WHERE pipeline = ? AND batch_id = ?",
            [load.pipeline, load.batch_id],
        ).fetchone()
        return row is not None

    def _exists(self, con: duckdb.DuckDBPyConnection, table: str) -> bool:
        row = con.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() "
            "AND table_name = ?",
            [table],
        ).fetchone()
        return row is not None

    def _write_rows(
        self,
        con: duckdb.DuckDBPyConnection,
        target: str,
        data: pa.Table,
        mode: str,
        keys: Sequence[str],
    ) -> None:
        con.register(_BATCH, data)
        try:
            if mode == "merge":  # the batch is the join's small side: its key range prunes the scan
                key = ", ".join(ident(k) for k in keys)
                con.execute(
                    f"DELETE FROM {ident(target)} WHERE ({key}) IN (SELECT {key} FROM {_BATCH})"
                )
            con.execute(f"INSERT INTO {ident(target)} BY NAME SELECT * FROM {_BATCH}")
        finally:
            _unregister(con, _BATCH)

    def _write_bookkeeping(
        self, con: duckdb.DuckDBPyConnection, load: Load, rows: int, dead_letters: int
    ) -> None:
        con.execute(
            "INSERT INTO _mendflow_batches VALUES (?, ?, ?, ?, ?, now())",
            [load.pipeline, load.batch_id, load.run_id, rows, dead_letters],
        )
        if load.position is not None:
            slot = STAGED if load.mode == "replace" else COMMITTED
            self._save_slot(con, load.pipeline, slot, load.position)


def _concat(dead: pa.Table, more: pa.Table) -> pa.Table:
    return pa.concat_tables([dead, more]) if more.num_rows else dead


def _unregister(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop a registered view; in a transaction a failed statement aborted, DuckDB refuses, and
    that refusal must not hide the error that aborted it (the rollback drops the view)."""
    with contextlib.suppress(duckdb.TransactionException):
        con.unregister(name)


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    # No transaction open, or the connection gone: then there is nothing to undo.
    with contextlib.suppress(duckdb.Error):
        con.rollback()

