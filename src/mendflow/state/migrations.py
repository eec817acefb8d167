"""Versioned migrations of the state schema, applied when a store opens.

    migrate(engine)          # -> the store's version, after applying what was missing

``mf_schema_migrations(version, name, applied_at)`` holds one row per step applied. ``MIGRATIONS``
is the ordered list of steps; each runs in a transaction of its own, together with its row, so a
crash mid-step leaves the store at the previous version and the step runs again next time.

Several processes may open a store at once (workers starting together on several machines):
each step's transaction first takes a lock, then reads the version, so exactly one process
applies a step and the others find it done. The lock is ``pg_advisory_xact_lock`` on
PostgreSQL and the file's write lock (``BEGIN IMMEDIATE``) on SQLite; both end with the
transaction.

Step 1 creates the tables of ``schema.py`` that do not exist yet, so a store made before
migrations existed upgrades in place. A store whose version is newer than every step here was
migrated by a newer mendflow: it is refused rather than misread.

To change the schema, append a step with explicit DDL; never edit an applied one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import sqlalchemy as sa

from mendflow.exceptions import ConfigError
from mendflow.state._connect import write_transaction
from mendflow.state.schema import metadata

#: The advisory lock key of state migrations on PostgreSQL (b"mendflow" read as an integer).
LOCK_KEY = int.from_bytes(b"mendflow", "big") & 0x7FFF_FFFF_FFFF_FFFF

versions = sa.Table(
    "mf_schema_migrations",
    sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.Float, nullable=False),
)


@dataclass(frozen=True, slots=True)
class Migration:
    """One step: its version (1, 2, ...), what it does, and the function that does it."""

    version: int
    name: str
    apply: Callable[[sa.Connection], None]


#: The tables step 3 adds; step 1 creates every other table of ``schema.py``.
_SERVICE_TABLES = ("mf_jobs", "mf_schedules", "mf_alerts", "mf_maintenance")


def _tables(con: sa.Connection) -> None:
    tables = [t for t in metadata.sorted_tables if t.name not in _SERVICE_TABLES]
    metadata.create_all(con, tables=tables, checkfirst=True)


def _service(con: sa.Connection) -> None:
    tables = [metadata.tables[name] for name in _SERVICE_TABLES]
    metadata.create_all(con, tables=tables, checkfirst=True)
    # The lease: at most one running job per pipeline, whichever worker claims it.
    con.exec_driver_sql(
        "CREATE UNIQUE INDEX IF NOT EXISTS ux_mf_jobs_running ON mf_jobs (pipeline) "
        "WHERE status = 'running'"
    )
    con.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS ix_mf_jobs_status_requested ON mf_jobs (status, requested_at)"
    )


def _indexes(con: sa.Connection) -> None:
    # The status command's checkpoint lookup and the runs list filter by pipeline and read the
    # newest rows; the composite indexes serve both, and make the one-column ones redundant.
    for statement in (
        "CREATE INDEX IF NOT EXISTS ix_mf_events_pipeline_kind_id "
        "ON mf_events (pipeline, kind, id)",
        "CREATE INDEX IF NOT EXISTS ix_mf_runs_pipeline_started_at "
        "ON mf_runs (pipeline, started_at)",
        "DROP INDEX IF EXISTS ix_mf_events_pipeline",
        "DROP INDEX IF EXISTS ix_mf_runs_pipeline",
    ):
        con.exec_driver_sql(statement)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "runs, batches, attempts, events, breakers and the healing ledger", _tables),
    Migration(2, "indexes for the latest runs and checkpoint of a pipeline", _indexes),
    Migration(3, "the service: jobs with their leases, schedules, alerts, maintenance", _service),
)


def migrate(engine: sa.Engine, steps: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply the ``steps`` the store at ``engine`` lacks, in order; return its version.

    Raises ``ConfigError`` when the store is newer than the last of ``steps``."""
    known = steps[-1].version if steps else 0
    while True:
        with _locked(engine) as con:
            versions.create(con, checkfirst=True)
            current = con.execute(sa.select(sa.func.max(versions.c.version))).scalar() or 0
            if current > known:
                raise ConfigError(
                    f"the state store is at schema version {current}, made by a newer mendflow "
                    f"(this one knows versions up to {known}); upgrade mendflow to use it"
                )
            step = next((s for s in steps if s.version > current), None)
            if step is None:
                return current
            step.apply(con)
            con.execute(versions.insert().values(
                version=step.version, name=step.name, applied_at=time.time()))


def current_version(engine: sa.Engine) -> int:
    """The store's schema version (0 when it has no migrations table yet)."""
    with engine.connect() as con:
        if not sa.inspect(con).has_table(versions.name):
            return 0
        return con.execute(sa.select(sa.func.max(versions.c.version))).scalar() or 0


def _locked(engine: sa.Engine) -> AbstractContextManager[sa.Connection]:
    """A transaction holding the store's migration lock until it ends."""
    return write_transaction(engine, lock_key=LOCK_KEY)


__all__: Sequence[str] = ("MIGRATIONS", "Migration", "current_version", "migrate")
