"""The state store: what happened, for people and for tools (SQLAlchemy; SQLite by default).

It subscribes to the runner's events (``store.record``) and keeps:

- ``mf_runs``: one row per run, its outcome and counts;
- ``mf_batches``: every batch loaded or skipped, with the position committed with it;
- ``mf_attempts``: every retry of a call, with the error that caused it;
- ``mf_events``: every event, as JSON.

The destination's checkpoint is the truth for resuming; the store is the record of how we got
there. A run still marked running when its pipeline starts again was interrupted (the process
died): it is marked so.

The database is SQLite (the default, a file) or PostgreSQL, shared by every process and machine
that names the same URL (see ``_connect`` for the URL forms). Opening a store brings its schema
up to date (``migrations``). Passwords are masked in ``url``, ``repr``, errors and stored text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.events import (
    BatchLoaded,
    BatchSkipped,
    Event,
    RetryScheduled,
    RunFailed,
    RunFinished,
    RunStarted,
)
from mendflow.state._connect import display, make_engine, scrubbed, state_url, translated
from mendflow.state.migrations import migrate
from mendflow.state.schema import attempts, batches, events, runs

if TYPE_CHECKING:
    from mendflow.resilience.registry import BreakerRegistry

ENV = "MENDFLOW_STATE_URL"


def default_state_url() -> str:
    """``$MENDFLOW_STATE_URL``, else a SQLite file ``.mendflow/state.db`` in this folder."""
    return os.environ.get(ENV) or "sqlite:///" + os.path.join(".mendflow", "state.db")


class StateStore:
    """Runs, batches, attempts and events in a SQL database named by a URL.

    ``url`` is a SQLAlchemy URL or a libpq key=value string (default: ``default_state_url()``);
    the attribute ``url`` is the URL as shown to people, its password masked.
    """

    def __init__(self, url: str | None = None) -> None:
        parsed = state_url(url or default_state_url())
        self.url = display(parsed)
        self.engine = make_engine(parsed)
        try:
            with translated(parsed):
                migrate(self.engine)
        except BaseException:
            self.engine.dispose()
            raise
        self._breakers: BreakerRegistry | None = None

    def __repr__(self) -> str:
        return f"StateStore({self.url!r})"

    def breakers(self, clock: Clock = SYSTEM_CLOCK) -> BreakerRegistry:
        """The circuit breakers whose state this store shares with every process that uses it
        (made on first use, with that first ``clock``)."""
        if self._breakers is None:
            from mendflow.resilience.registry import BreakerRegistry
            from mendflow.state.breakers import SqlBreakerStore

            store = SqlBreakerStore(self.engine, clock=clock)
            self._breakers = BreakerRegistry(store, clock=clock)
        return self._breakers

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    # -- the hook ------------------------------------------------------------------------------

    def record(self, event: Event) -> None:
        """Store ``event`` and update the run it belongs to (one transaction); any password in
        its text (an error quoting a connection string) is masked first."""
        payload = scrubbed(event.payload())
        with self.engine.begin() as con:
            con.execute(
                events.insert().values(
                    run_id=event.run_id, pipeline=event.pipeline, kind=event.kind, at=event.at,
                    payload=json.dumps(payload, default=str, sort_keys=True),
                )
            )
            _project(con, event)

    # -- queries -------------------------------------------------------------------------------

    def runs(self, *, pipeline: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs, newest first."""
        query = sa.select(runs).order_by(runs.c.started_at.desc()).limit(limit)
        if pipeline is not None:
            query = query.where(runs.c.pipeline == pipeline)
        with self.engine.connect() as con:
            return [_run_row(row._mapping) for row in con.execute(query)]

    def status(self) -> list[dict[str, Any]]:
        """Per pipeline: its last run, rows loaded over all runs, and its committed position."""
        totals = (
            sa.select(
                runs.c.pipeline,
                sa.func.count().label("runs"),
                sa.func.coalesce(sa.func.sum(runs.c.rows_loaded), 0).label("rows_loaded"),
                sa.func.coalesce(sa.func.sum(runs.c.dead_letters), 0).label("dead_letters"),
                sa.func.max(runs.c.started_at).label("last_started"),
            )
            .group_by(runs.c.pipeline)
            .order_by(runs.c.pipeline)
        )
        out = []
        with self.engine.connect() as con:
            for row in con.execute(totals):
                last = self.runs(pipeline=row.pipeline, limit=1)[0]
                out.append(
                    {
                        "pipeline": row.pipeline,
                        "runs": row.runs,
                        "rows_loaded": int(row.rows_loaded),
                        "dead_letters": int(row.dead_letters),
                        "last_run": last,
                        "checkpoint": self._checkpoint(con, row.pipeline),
                    }
                )
        return out

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """Every event of one run, in order."""
        query = sa.select(events).where(events.c.run_id == run_id).order_by(events.c.id)
        with self.engine.connect() as con:
            return [
                {"kind": r.kind, "at": _iso(r.at), **json.loads(r.payload)}
                for r in con.execute(query)
            ]

    def _checkpoint(self, con: sa.Connection, pipeline: str) -> Any:
        query = (
            sa.select(events.c.payload)
            .where(events.c.pipeline == pipeline, events.c.kind == "batch.loaded")
            .order_by(events.c.id.desc())
            .limit(1)
        )
        payload = con.execute(query).scalar()
        return None if payload is None else json.loads(payload)["checkpoint"]


def _project(con: sa.Connection, event: Event) -> None:
    """Fold ``event`` into the run, batch and attempt tables."""
    this_run = runs.c.run_id == event.run_id
    match event:
        case RunStarted():
            con.execute(
                runs.update()
                .where(runs.c.pipeline == event.pipeline, runs.c.status == "running")
                .values(status="interrupted")
            )
            con.execute(
                runs.insert().values(
                    run_id=event.run_id, pipeline=event.pipeline, status="running",
                    write_mode=event.write_mode, started_at=event.at, rows_read=0,
                    rows_loaded=0, dead_letters=0, batches=0, skipped=0, retries=0,
                    position=json.dumps(event.checkpoint, sort_keys=True),
                )
            )
        case BatchLoaded() | BatchSkipped():
            loaded = isinstance(event, BatchLoaded)
            dead = event.dead_letters if isinstance(event, BatchLoaded) else 0
            con.execute(
                batches.insert().values(
                    run_id=event.run_id, pipeline=event.pipeline, batch_id=event.batch_id,
                    status="loaded" if loaded else "skipped", rows=event.rows,
                    dead_letters=dead, at=event.at,
                )
            )
            values: dict[str, Any] = {"skipped": runs.c.skipped + (0 if loaded else 1)}
            if isinstance(event, BatchLoaded):
                values |= {
                    "rows_loaded": runs.c.rows_loaded + event.rows,
                    "dead_letters": runs.c.dead_letters + event.dead_letters,
                    "batches": runs.c.batches + 1,
                    "position": json.dumps(event.checkpoint, sort_keys=True),
                }
            con.execute(runs.update().where(this_run).values(**values))
        case RetryScheduled():
            con.execute(
                attempts.insert().values(
                    run_id=event.run_id, pipeline=event.pipeline,
                    dependency=scrubbed(event.dependency),
                    attempt=event.attempt, delay_s=event.delay_s, error_type=event.error_type,
                    error=scrubbed(event.error), at=event.at,
                )
            )
            con.execute(runs.update().where(this_run).values(retries=runs.c.retries + 1))
        case RunFinished():
            con.execute(
                runs.update().where(this_run).values(
                    status="succeeded", finished_at=event.at, rows_read=event.rows_read
                )
            )
        case RunFailed():
            con.execute(
                runs.update().where(this_run).values(
                    status="failed", finished_at=event.at, error=scrubbed(event.error),
                    error_type=event.error_type, retryable=event.retryable,
                )
            )
        case _:
            pass


def _run_row(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["started_at"] = _iso(out["started_at"])
    out["finished_at"] = _iso(out["finished_at"])
    out["position"] = json.loads(out["position"]) if out["position"] else None
    return out


def _iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


__all__: Sequence[str] = ("StateStore", "default_state_url")
