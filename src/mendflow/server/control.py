"""What the service can tell and do, over one state store and one catalog.

The JSON API, the Alertmanager webhook and the dashboard are thin adapters over this class: no
route handler holds logic of its own. Every healing action taken through it (a rerun asked by an
alert, a pause, a breaker reset) lands in the ledger, on the incident it belongs to.

    control = Control(store, catalog)
    control.pipelines()            # health, freshness, schedule, paused, open incidents
    control.rerun("orders", reason="manual")
    control.replay("orders")       # holds the pipeline's lease while it replays

Everything returned is JSON-ready (dicts of str, numbers, None, lists); times the service
computes are epoch seconds (``*_at``), the run history keeps the store's ISO 8601 strings. Any
password in a URL or error text is masked.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa

from mendflow._redact import redact
from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.deadletter import Filter, ReplayResult, replay, store_for
from mendflow.exceptions import ConfigError
from mendflow.remediation import kpi
from mendflow.remediation.ledger import Ledger
from mendflow.remediation.playbook import Action
from mendflow.resilience.breaker_state import BreakerRecord, BreakerState
from mendflow.server.catalog import Catalog
from mendflow.state.breakers import SqlBreakerStore
from mendflow.state.jobs import QUEUED, RUNNING, Job, JobQueue
from mendflow.state.schedules import Schedules
from mendflow.state.schema import breakers, runs
from mendflow.state.store import StateStore

#: Freshness assumed for the SLO figures of a pipeline that declares no ``freshness_s``.
DEFAULT_FRESHNESS_S = 3600.0
_CAS_TRIES = 8


class Control:
    """The service's reads and actions (see the module docstring)."""

    def __init__(
        self, store: StateStore, catalog: Catalog, *, clock: Clock = SYSTEM_CLOCK,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.jobs = JobQueue(store, clock=clock)
        self.schedules = Schedules(store, clock=clock)
        self.ledger = Ledger(store)
        #: Who holds a pipeline's lease while the API replays its dead letters.
        self.name = name or f"api@{socket.gethostname()}:{os.getpid()}"

    # -- reads ---------------------------------------------------------------------------------

    def pipelines(self) -> list[dict[str, Any]]:
        """Per pipeline: name, schedule, freshness_s, last_success_at, freshness_lag_s, stale,
        health ("healthy", "degraded", "failing", "stale", "paused", "never_run"), paused,
        in_maintenance, open_incidents, last_run, running job."""
        return [self.pipeline(name) for name in self.catalog.names()]

    def pipeline(self, name: str) -> dict[str, Any]:
        """One pipeline as in ``pipelines`` (``UnknownPipeline`` if not served)."""
        entry = self.catalog.entry(name)
        now = self.clock.now()
        state = self.schedules.state(name)
        last = self.store.runs(pipeline=name, limit=1)
        success = self._last_success(name)
        lag = None if success is None else max(0.0, now - success)
        stale = entry.freshness_s is not None and (lag is None or lag > entry.freshness_s)
        running = self.jobs.jobs(pipeline=name, status=RUNNING, limit=1)
        queued = self.jobs.jobs(pipeline=name, status=QUEUED, limit=1)
        open_incidents = len(self.ledger.unhealed(name))
        last_run = _masked_run(last[0]) if last else None
        return {
            "name": name,
            "path": str(entry.path),
            "schedule": entry.schedule.describe() if entry.schedule else None,
            "next_at": state.next_at,
            "freshness_s": entry.freshness_s,
            "last_success_at": success,
            "freshness_lag_s": lag,
            "stale": stale,
            "health": _health(state.paused, last_run, stale, open_incidents),
            "paused": state.paused,
            "paused_reason": state.paused_reason,
            "in_maintenance": self.in_maintenance(name, now),
            "open_incidents": open_incidents,
            "last_run": last_run,
            "running_job": job_dict(running[0]) if running else None,
            "queued_job": job_dict(queued[0]) if queued else None,
        }

    def runs(self, *, pipeline: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Recent runs, newest first."""
        return [_masked_run(r) for r in self.store.runs(pipeline=pipeline, limit=limit)]

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        """Every event of one run, in order (``LookupError`` if there is no such run)."""
        with self.store.engine.connect() as con:
            found = con.execute(sa.select(runs.c.run_id).where(runs.c.run_id == run_id)).first()
        if found is None:
            raise LookupError(f"no run {run_id!r} is recorded; list runs with GET /api/runs.")
        return self.store.events(run_id)

    def incidents(self, *, pipeline: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Incidents with their actions, newest first."""
        return self.ledger.incidents(pipeline=pipeline, limit=limit)

    def incident(self, incident_id: str) -> dict[str, Any]:
        """One incident with its actions (``LookupError`` if none)."""
        found = self.ledger.incident(incident_id) if incident_id else None
        if found is None:
            raise LookupError(
                f"no incident {incident_id!r} (or the prefix matches several); list them with "
                "GET /api/incidents."
            )
        return found

    def dead_letters(
        self, pipeline: str, *, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        """The pipeline's dead letters (``DeadLetter.as_dict``), oldest first."""
        if limit < 1 or offset < 0:
            raise ConfigError("limit must be at least 1 and offset at least 0.")
        spec = self.catalog.get(pipeline)
        destination = spec.pipeline.destination
        try:
            letters = store_for(destination).list(Filter(pipeline=pipeline, limit=offset + limit))
        finally:
            destination.close()
        return [letter.as_dict() for letter in letters[offset:]]

    def service_levels(self) -> list[dict[str, Any]]:
        """Per pipeline: availability, MTTR, auto-heal rate... (``remediation.kpi``), using
        each pipeline's ``freshness_s`` (default one hour)."""
        wanted: dict[float, set[str]] = {}
        for entry in self.catalog.entries():
            wanted.setdefault(entry.freshness_s or DEFAULT_FRESHNESS_S, set()).add(entry.name)
        now = self.clock.now()
        levels = [
            level.as_dict()
            for freshness, names in wanted.items()
            for level in kpi.service_levels(self.store, now=now, freshness_s=freshness)
            if level.pipeline in names
        ]
        return sorted(levels, key=lambda level: str(level["pipeline"]))

    def job_list(self, *, pipeline: str | None = None, limit: int = 50) -> list[Job]:
        """Recent jobs, newest first."""
        return self.jobs.jobs(pipeline=pipeline, limit=limit)

    def breakers(self) -> list[dict[str, Any]]:
        """Every breaker that ever changed state: dependency, state, opened_at, open_for_s,
        reason, version, updated_at."""
        now = self.clock.now()
        with self.store.engine.connect() as con:
            rows = con.execute(sa.select(breakers).order_by(breakers.c.dependency)).all()
        return [
            {
                "dependency": redact(row.dependency),
                "state": row.state,
                "opened_at": row.opened_at,
                "open_for_s": (
                    max(0.0, now - row.opened_at)
                    if row.state != BreakerState.CLOSED and row.opened_at is not None else None
                ),
                "reason": redact(row.reason or ""),
                "version": row.version,
                "updated_at": row.updated_at,
            }
            for row in rows
        ]

    def ready(self) -> bool:
        """True when the state store answers a query."""
        try:
            with self.store.engine.connect() as con:
                con.execute(sa.select(1))
        except Exception:  # noqa: BLE001 - any failure to answer means not ready
            return False
        return True

    # -- actions -------------------------------------------------------------------------------

    def rerun(
        self, pipeline: str, *, reason: str = "manual", incident_id: str | None = None
    ) -> Job | None:
        """Queue a run now (None if one is queued already); on an incident, recorded as its
        ``rerun`` action. A run already queued is given the incident when it has none, so the
        worker verifies (and heals) it when the run ends (``JobQueue.enqueue_or_attach``)."""
        self.catalog.entry(pipeline)
        job = self.jobs.enqueue(pipeline, reason=reason, incident_id=incident_id)
        if incident_id is not None:
            if job is not None:
                outcome, detail = "queued", f"job {job.job_id} queued ({reason})"
            else:
                queued = self.jobs.enqueue_or_attach(pipeline, reason=reason,
                                                     incident_id=incident_id)
                outcome = "already_queued"
                carries = ("" if queued.incident_id == incident_id
                           else f", for incident {queued.incident_id}")
                detail = f"a run was queued already (job {queued.job_id}{carries})"
            self._act(incident_id, Action.RERUN, outcome, detail)
        return job

    def pause(self, pipeline: str, *, reason: str, incident_id: str | None = None) -> bool:
        """Pause the pipeline's scheduled and alert-driven runs; False if it was paused."""
        self.catalog.entry(pipeline)
        changed = self.schedules.pause(pipeline, reason=reason)
        if incident_id is not None:
            self._act(incident_id, Action.PAUSE, "paused" if changed else "already_paused",
                      reason)
        return changed

    def resume(self, pipeline: str, *, incident_id: str | None = None) -> bool:
        """Resume them; False if it was not paused."""
        self.catalog.entry(pipeline)
        changed = self.schedules.resume(pipeline)
        if incident_id is not None:
            self._act(incident_id, Action.RESUME, "resumed" if changed else "not_paused", "")
        return changed

    def reset_breaker(self, dependency: str, *, incident_id: str | None = None) -> str:
        """Force the dependency's breaker closed; return the state it was in (``LookupError``
        when that breaker never changed state)."""
        previous = self._move_breaker(dependency, BreakerState.CLOSED, {BreakerState.CLOSED})
        if incident_id is not None:
            outcome = "already_closed" if previous == BreakerState.CLOSED else "closed"
            self._act(incident_id, Action.RESET_BREAKER, outcome,
                      f"{dependency}: {previous} -> closed")
        return previous

    def probe_breaker(self, dependency: str, *, incident_id: str | None = None) -> str:
        """Let the next call through as a probe (open -> half_open); return the new state."""
        previous = self._move_breaker(
            dependency, BreakerState.HALF_OPEN, {BreakerState.CLOSED, BreakerState.HALF_OPEN}
        )
        new = BreakerState.HALF_OPEN if previous == BreakerState.OPEN else previous
        if incident_id is not None:
            outcome = "half_open" if previous == BreakerState.OPEN else f"was_{previous}"
            self._act(incident_id, Action.PROBE, outcome, f"{dependency}: {previous} -> {new}")
        return str(new)

    def replay(self, pipeline: str, *, ids: Sequence[int] = ()) -> ReplayResult:
        """Replay the pipeline's dead letters (those ``ids``, or all), holding its lease;
        ``PipelineBusy`` while a worker runs it."""
        self.catalog.entry(pipeline)
        where = Filter(pipeline=pipeline, ids=tuple(ids))
        with self.jobs.hold(pipeline, self.name, kind="replay"):
            spec = self.catalog.get(pipeline)
            try:
                return replay(spec.pipeline, where=where, clock=self.clock)
            finally:
                spec.pipeline.destination.close()

    def add_maintenance(
        self, pipeline: str, *, starts_at: float, ends_at: float, reason: str
    ) -> dict[str, Any]:
        """Add a maintenance window: healing actions for the pipeline are suppressed in it."""
        self.catalog.entry(pipeline)
        if not ends_at > starts_at:
            raise ConfigError(
                f"a maintenance window must end after it starts (starts_at {starts_at}, "
                f"ends_at {ends_at}); set ends_at later."
            )
        window = self.schedules.add_window(
            pipeline, starts_at=starts_at, ends_at=ends_at, reason=reason
        )
        return asdict(window)

    def maintenance(self, pipeline: str) -> list[dict[str, Any]]:
        """The pipeline's stored maintenance windows, soonest first."""
        self.catalog.entry(pipeline)
        return [asdict(w) for w in self.schedules.windows(pipeline)]

    def in_maintenance(self, pipeline: str, at: float | None = None) -> bool:
        """True inside one of the pipeline's windows (YAML or stored)."""
        entry = self.catalog.entry(pipeline)
        when = self.clock.now() if at is None else at
        return self.schedules.in_maintenance(pipeline, when, static=entry.maintenance)

    # -- helpers -------------------------------------------------------------------------------

    def _act(self, incident_id: str, action: str, outcome: str, detail: str) -> None:
        self.ledger.act(incident_id, action=str(action), outcome=outcome, detail=detail,
                        at=self.clock.now())

    def _last_success(self, pipeline: str) -> float | None:
        query = sa.select(sa.func.max(runs.c.finished_at)).where(
            runs.c.pipeline == pipeline, runs.c.status == "succeeded"
        )
        with self.store.engine.connect() as con:
            found = con.execute(query).scalar()
        return None if found is None else float(found)

    def _move_breaker(
        self, dependency: str, target: BreakerState, unchanged: set[BreakerState]
    ) -> str:
        """Compare-and-set the breaker's shared record to ``target`` unless it is in one of
        ``unchanged``; the state it was in."""
        cas = SqlBreakerStore(self.store.engine, clock=self.clock)
        for _ in range(_CAS_TRIES):
            record = cas.load(dependency)
            if record is None:
                raise LookupError(
                    f"no breaker {dependency!r} is recorded; list them with GET /api/breakers."
                )
            if record.state in unchanged:
                return str(record.state)
            opened_at = None if target == BreakerState.CLOSED else record.opened_at
            reason = ("reset to closed by an operator" if target == BreakerState.CLOSED
                      else "probe asked by an operator")
            new = BreakerRecord(dependency, target, opened_at, reason, record.version + 1)
            if cas.save(new, expected_version=record.version):
                return str(record.state)
        raise LookupError(f"the breaker {dependency!r} kept changing state; try again.")


def _health(
    paused: bool, last_run: dict[str, Any] | None, stale: bool, open_incidents: int
) -> str:
    if paused:
        return "paused"
    if last_run is None:
        return "never_run"
    if last_run["status"] == "failed":
        return "failing"
    if stale:
        return "stale"
    if open_incidents or last_run["status"] == "interrupted":
        return "degraded"
    return "healthy"


def _masked_run(row: dict[str, Any]) -> dict[str, Any]:
    if row.get("error"):
        row = {**row, "error": redact(str(row["error"]))}
    return row


def job_dict(job: Job) -> dict[str, Any]:
    """A job as a JSON-ready dict, its error text masked."""
    out = asdict(job)
    if out.get("error"):
        out["error"] = redact(str(out["error"]))
    return out


__all__: Sequence[str] = ("DEFAULT_FRESHNESS_S", "Control", "job_dict")
