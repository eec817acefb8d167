"""A connection to a PostgreSQL destination, with the bookkeeping tables in place.

The schema and the tables beside the data (checkpoints, batches, dead letters, schema versions)
are created on the first connection that finds one missing, one process at a time (an advisory
lock). A connection that finds them all creates nothing: ``CREATE ... IF NOT EXISTS`` asks for the
CREATE privilege even when there is nothing to create, and a loader role need not have it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg
from psycopg import sql

from mendflow.sinks import _pg_dlq as _dlq
from mendflow.sinks import _pg_keys as _keys
from mendflow.sinks import _pg_schema as _schema

__all__ = ["connect"]

#: TCP keepalives notice a server gone mid-statement within about 25 s, not hours.
_OPTIONS = {"application_name": "mendflow", "keepalives": 1, "keepalives_idle": 10,
            "keepalives_interval": 5, "keepalives_count": 3}
_BOOKKEEPING = ("_mendflow_checkpoints", "_mendflow_batches", "_mendflow_dead_letters",
                "_mendflow_schema_versions", _keys.TABLE)
_META = (
    ("_mendflow_checkpoints",
     "CREATE TABLE IF NOT EXISTS {} (pipeline TEXT NOT NULL, slot TEXT NOT NULL, "
     "position TEXT NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT now(), "
     "PRIMARY KEY (pipeline, slot))"),
    ("_mendflow_batches",
     "CREATE TABLE IF NOT EXISTS {} (pipeline TEXT NOT NULL, batch_id TEXT NOT NULL, "
     "run_id TEXT NOT NULL, rows BIGINT NOT NULL, dead_letters BIGINT NOT NULL, "
     "committed_at TIMESTAMPTZ NOT NULL DEFAULT now(), n BIGSERIAL, "
     "PRIMARY KEY (pipeline, batch_id))"),
    (_keys.TABLE, _keys.DDL),
)


def connect(url: str, schema: str, **options: Any) -> psycopg.Connection[Any]:
    """Open a connection (autocommit off) to ``url`` and make sure ``schema`` holds the
    bookkeeping tables. psycopg errors propagate; the caller translates them."""
    con = psycopg.connect(url, autocommit=False, **{**_OPTIONS, **options})
    try:
        with con.cursor() as cur:
            if not _prepared(cur, schema):
                cur.execute("SELECT pg_advisory_xact_lock(hashtextextended('mendflow:setup', 0))")
                cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(schema)))
                for table, statement in _META:
                    cur.execute(sql.SQL(statement).format(sql.Identifier(schema, table)))
                for ddl in (*_dlq.ddl(schema), *_schema.ddl(schema)):
                    cur.execute(sql.Composed([ddl]))
        con.commit()
    except BaseException:
        with contextlib.suppress(psycopg.Error):
            con.close()
        raise
    return con


def _prepared(cur: psycopg.Cursor[Any], schema: str) -> bool:
    """Whether every bookkeeping table exists in ``schema``."""
    names = [sql.Identifier(schema, t).as_string(cur) for t in _BOOKKEEPING]
    cur.execute("SELECT bool_and(to_regclass(n) IS NOT NULL) FROM unnest(%s::text[]) AS n",
                (names,))
    row = cur.fetchone()
    return bool(row and row[0])
