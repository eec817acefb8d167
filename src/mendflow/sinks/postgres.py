"""PostgreSQL destination: every batch, its dead letters and its checkpoint in one transaction.

    PostgresSink("postgresql://loader@db.internal/warehouse", table="orders", schema="raw")

Each write is one transaction on one connection: an advisory lock on the pipeline (two writers of
one pipeline queue up), the batch's schema met (``_pg_schema``: DDL is transactional here), the
rows in (``_pg_rows``: binary COPY, through a temporary stage and one ``INSERT ... SELECT`` when
merging into existing keys), the audit, the dead letters, the batch's identity
(``_mendflow_batches``) and the checkpoint (``_mendflow_checkpoints``), then COMMIT. ``replace``
loads into a staging table that ``finish`` swaps in.

Connection settings: the URL (a ``postgresql://`` URI or a libpq ``key=value`` string), else
``$MENDFLOW_PG_URL``, else libpq's own variables (``PGHOST``, ``PGUSER``, ``PGPASSWORD``...).
The password never leaves: the sink's ``name`` and every error show the URL masked. A broken
connection (the server restarted, a dropped socket) is closed and reopened on the next call;
the error is ``DestinationUnavailable``, retried behind the destination's breaker.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from mendflow._redact import redact_url
from mendflow.batch import Committed, Load, Position
from mendflow.contracts.schema import Version
from mendflow.sinks import _pg_audit as _audit
from mendflow.sinks import _pg_dlq as _dlq
from mendflow.sinks import _pg_keys as _keys
from mendflow.sinks import _pg_rows as _rows
from mendflow.sinks import _pg_schema as _schema
from mendflow.sinks import _pg_setup as _setup
from mendflow.sinks._drift import report as report_drift
from mendflow.sinks._pg_errors import translate

__all__ = ["ENV", "PostgresSink"]

ENV = "MENDFLOW_PG_URL"
COMMITTED, STAGED = "committed", "staged"


class PostgresSink:
    """Load into ``schema.table`` of the PostgreSQL database at ``url``."""

    def __init__(
        self,
        url: str | None = None,
        *,
        table: str,
        schema: str = "public",
        name: str = "",
        statement_timeout_s: float | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.url = url if url is not None else os.environ.get(ENV, "")
        self.table = table
        self.schema = schema
        self.statement_timeout_s = statement_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.name = name or f"postgres:{redact_url(self.url) or 'libpq-env'}"
        self._con: psycopg.Connection[Any] | None = None
        self._duck: duckdb.DuckDBPyConnection | None = None
        self._tables: dict[str, _schema.Table] = {}  # tables' columns as this sink made them

    def __repr__(self) -> str:
        return f"PostgresSink({self.name!r}, table={self.table!r}, schema={self.schema!r})"

    # -- the Sink interface -------------------------------------------------------------------

    def position(self, pipeline: str, *, mode: str = "append") -> Position:
        """The committed position of ``pipeline``; for replace, that of the staging in progress."""
        with self._transaction(f"reading the checkpoint of {pipeline}") as cur:
            if mode == "replace":
                staged = self._slot(cur, pipeline, STAGED)
                if staged is None:
                    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._id(self._staging)))
                return staged or {}
            return self._slot(cur, pipeline, COMMITTED) or {}

    def write(
        self, load: Load, *, on_staged: Callable[[], None] = lambda: None
    ) -> Committed | None:
        """Commit the batch's rows, dead letters and position together; None if already done.

        Inside the transaction, in order: the table's schema meets the batch's (drift policy),
        the rows go in, the dead letters go in, the checks audit the batch, the checkpoint moves.
        A failed blocking check rolls all of it back.
        """
        target = self._staging if load.mode == "replace" else self.table
        with self._transaction(f"loading batch {load.batch_id} into {self.table}") as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                        (f"mendflow:{self.schema}:{load.pipeline}",))
            cur.execute(sql.SQL("SELECT 1 FROM {} WHERE pipeline = %s AND batch_id = %s")
                        .format(self._id("_mendflow_batches")), (load.pipeline, load.batch_id))
            if cur.fetchone() is not None:
                return None
            data, dead, table, drift = load.data, load.dead_letters, None, None
            if data.num_columns:
                shaped, table = _schema.reconcile(
                    cur, self._duckdb, self.schema, target, load, self.table,
                    self._tables.get(target),
                )
                data, drift = shaped.data, shaped.changes
                if shaped.dead_letters.num_rows:
                    dead = pa.concat_tables([dead, shaped.dead_letters])
                if data.num_columns:
                    _rows.write(cur, self.schema, target, data, load, table)
            # the audit first: a refused batch then draws no dead-letter id (sequences don't
            # roll back); it reads the rows and counts, never the dead-letter table
            findings = _audit.audit(cur, self.schema, target, _rows.STAGE, load, data, dead)
            _dlq.add(cur, self.schema, load, dead)
            self._bookkeeping(cur, load, data.num_rows, dead.num_rows)
            on_staged()
        if table is not None:
            self._tables[target] = table  # known only once the DDL is committed
        _audit.report(load, findings)
        if drift is not None:
            report_drift(load, drift)
        return Committed(data.num_rows, dead.num_rows)

    def finish(self, pipeline: str, *, mode: str = "append") -> None:
        """Build a merge table's primary key if its first loads left it for now (``_pg_keys``);
        for replace, swap the staging table in and promote its position, atomically."""
        if mode != "replace":
            with self._transaction(f"building the primary key of {self.table}") as cur:
                _keys.build(cur, self.schema, self.table)
            return
        with self._transaction(f"publishing the replacement of {self.table}") as cur:
            staged = self._slot(cur, pipeline, STAGED)
            if staged is not None and self._exists(cur, self._staging):
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._id(self.table)))
                cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                    self._id(self._staging), sql.Identifier(self.table)))
            elif self._exists(cur, self.table):
                cur.execute(sql.SQL("DELETE FROM {}").format(self._id(self.table)))
            self._save_slot(cur, pipeline, COMMITTED, staged or {})
            cur.execute(sql.SQL("DELETE FROM {} WHERE pipeline = %s AND slot = %s").format(
                self._id("_mendflow_checkpoints")), (pipeline, STAGED))
            cur.execute(sql.SQL("DELETE FROM {} WHERE pipeline = %s").format(
                self._id("_mendflow_batches")), (pipeline,))
        self._tables.clear()

    def dead_letters(self) -> _dlq.PostgresDeadLetters:
        """The dead-letter store kept beside the table (see ``mendflow.deadletter``)."""
        return _dlq.PostgresDeadLetters(self._connect, schema=self.schema, name=self.name)

    def schema_history(self) -> list[Version]:
        """Every version of the table's schema, oldest first, with its diff from the last."""
        with self._transaction(f"reading the schema history of {self.table}") as cur:
            return _schema.history(cur, self.schema, self.table)

    def close(self) -> None:
        """Close the connection."""
        self._tables.clear()
        if self._con is not None:
            with contextlib.suppress(psycopg.Error):
                self._con.close()
            self._con = None
        if self._duck is not None:
            self._duck.close()
            self._duck = None

    # -- internals ----------------------------------------------------------------------------

    @property
    def _staging(self) -> str:
        name = f"_mendflow_stage__{self.table}"
        if len(name.encode()) <= 63:  # PostgreSQL cuts longer names: keep them distinct
            return name
        return "_mendflow_stage__" + hashlib.sha256(self.table.encode()).hexdigest()[:40]

    @property
    def _secrets(self) -> tuple[str, ...]:
        password = ""
        with contextlib.suppress(psycopg.Error):
            password = str(conninfo_to_dict(self.url).get("password") or "")
        return (password, os.environ.get("PGPASSWORD", ""))

    def _id(self, table: str) -> sql.Identifier:
        return sql.Identifier(self.schema, table)

    def _connect(self) -> psycopg.Connection[Any]:
        """The open connection, or a new one with the bookkeeping tables in place."""
        if self._con is not None and not self._con.closed and not self._con.broken:
            return self._con
        self._forget()
        options: dict[str, Any] = {"connect_timeout": max(1, int(self.connect_timeout_s))}
        if self.statement_timeout_s is not None:
            options["options"] = f"-c statement_timeout={int(self.statement_timeout_s * 1000)}"
        try:
            self._con = _setup.connect(self.url, self.schema, **options)
        except psycopg.Error as exc:
            raise translate(exc, f"connecting to {self.name} and preparing {self.schema}",
                            dependency=self.name, secrets=self._secrets) from exc
        return self._con

    @contextlib.contextmanager
    def _transaction(self, doing: str) -> Any:
        """A cursor in a transaction, committed at the end; rolled back (or the connection
        dropped, when it broke) on any error, a psycopg one translated."""
        con = self._connect()
        try:
            with con.cursor() as cur:
                yield cur
            con.commit()
        except psycopg.Error as exc:
            self._abandon(con)
            raise translate(exc, doing, dependency=self.name, secrets=self._secrets) from exc
        except BaseException:
            self._abandon(con)
            raise

    def _abandon(self, con: psycopg.Connection[Any]) -> None:
        try:
            con.rollback()
        except psycopg.Error:
            self._forget()  # broken: the next call reconnects
        if con.broken or con.closed:
            self._forget()

    def _forget(self) -> None:
        if self._con is not None:
            with contextlib.suppress(psycopg.Error):
                self._con.close()
        self._con = None
        self._tables.clear()  # what the catalog holds may have changed meanwhile

    def _duckdb(self) -> duckdb.DuckDBPyConnection:
        if self._duck is None:
            self._duck = duckdb.connect(config={"memory_limit": "256MB", "threads": 2})
        return self._duck

    def _slot(self, cur: psycopg.Cursor[Any], pipeline: str, slot: str) -> Position | None:
        cur.execute(sql.SQL("SELECT position FROM {} WHERE pipeline = %s AND slot = %s").format(
            self._id("_mendflow_checkpoints")), (pipeline, slot))
        row = cur.fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def _save_slot(
        self, cur: psycopg.Cursor[Any], pipeline: str, slot: str, position: Position
    ) -> None:
        cur.execute(
            sql.SQL("INSERT INTO {} (pipeline, slot, position) VALUES (%s, %s, %s) "
                    "ON CONFLICT (pipeline, slot) DO UPDATE SET position = EXCLUDED.position, "
                    "updated_at = now()").format(self._id("_mendflow_checkpoints")),
            (pipeline, slot, json.dumps(position, sort_keys=True)),
        )

    def _exists(self, cur: psycopg.Cursor[Any], table: str) -> bool:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL",
                    (sql.Identifier(self.schema, table).as_string(cur),))
        row = cur.fetchone()
        return bool(row and row[0])

    def _bookkeeping(self, cur: psycopg.Cursor[Any], load: Load, rows: int, dead: int) -> None:
        cur.execute(
            sql.SQL("INSERT INTO {} (pipeline, batch_id, run_id, rows, dead_letters) "
                    "VALUES (%s, %s, %s, %s, %s)").format(self._id("_mendflow_batches")),
            (load.pipeline, load.batch_id, load.run_id, rows, dead),
        )
        if load.position is not None:
            slot = STAGED if load.mode == "replace" else COMMITTED
            self._save_slot(cur, load.pipeline, slot, load.position)
