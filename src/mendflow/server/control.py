"""What the service can tell and do, over one state store and one catalog.

SKELETON (issue 6): the interface is fixed here; helper C implements it.

The JSON API, the Alertmanager webhook and the dashboard are thin adapters over this class: no
route handler holds logic of its own. Every healing action taken through it (a rerun asked by an
alert, a pause, a breaker reset) lands in the ledger, on the incident it belongs to.

    control = Control(store, catalog)
    control.pipelines()            # health, freshness, schedule, paused, open incidents
    control.rerun("orders", reason="manual")
    control.replay("orders")       # holds the pipeline's lease while it replays
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.deadletter import ReplayResult
from mendflow.server.catalog import Catalog
from mendflow.state.jobs import Job, JobQueue
from mendflow.state.schedules import Schedules
from mendflow.state.store import StateStore


class Control:
    """The service's reads and actions (see the module docstring)."""

    def __init__(self, store: StateStore, catalog: Catalog, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.jobs = JobQueue(store, clock=clock)
        self.schedules = Schedules(store, clock=clock)

    # -- reads ---------------------------------------------------------------------------------

    def pipelines(self) -> list[dict[str, Any]]:
        """Per pipeline: name, schedule, freshness_s, last_success_at, freshness_lag_s, stale,
        health ("healthy", "degraded", "failing", "stale", "paused", "never_run"), paused,
        in_maintenance, open_incidents, last_run, running job."""
        raise NotImplementedError

    def pipeline(self, name: str) -> dict[str, Any]:
        """One pipeline as in ``pipelines`` (``UnknownPipeline`` if not served)."""
        raise NotImplementedError

    def runs(self, *, pipeline: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Recent runs, newest first."""
        raise NotImplementedError

    def incidents(self, *, pipeline: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Incidents with their actions, newest first."""
        raise NotImplementedError

    def incident(self, incident_id: str) -> dict[str, Any]:
        """One incident with its actions (``LookupError`` if none)."""
        raise NotImplementedError

    def dead_letters(
        self, pipeline: str, *, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        """The pipeline's dead letters (``DeadLetter.as_dict``), oldest first."""
        raise NotImplementedError

    def service_levels(self) -> list[dict[str, Any]]:
        """Per pipeline: availability, MTTR, auto-heal rate... (``remediation.kpi``), using
        each pipeline's ``freshness_s`` (default one hour)."""
        raise NotImplementedError

    def job_list(self, *, pipeline: str | None = None, limit: int = 50) -> list[Job]:
        """Recent jobs, newest first."""
        raise NotImplementedError

    # -- actions -------------------------------------------------------------------------------

    def rerun(
        self, pipeline: str, *, reason: str = "manual", incident_id: str | None = None
    ) -> Job | None:
        """Queue a run now (None if one is queued already); on an incident, recorded as its
        ``rerun`` action."""
        raise NotImplementedError

    def pause(self, pipeline: str, *, reason: str, incident_id: str | None = None) -> bool:
        """Pause the pipeline's scheduled and alert-driven runs."""
        raise NotImplementedError

    def resume(self, pipeline: str, *, incident_id: str | None = None) -> bool:
        """Resume them."""
        raise NotImplementedError

    def reset_breaker(self, dependency: str, *, incident_id: str | None = None) -> str:
        """Force the dependency's breaker closed; return the state it was in."""
        raise NotImplementedError

    def probe_breaker(self, dependency: str, *, incident_id: str | None = None) -> str:
        """Let the next call through as a probe (open -> half_open); return the new state."""
        raise NotImplementedError

    def replay(self, pipeline: str, *, ids: Sequence[int] = ()) -> ReplayResult:
        """Replay the pipeline's dead letters (those ``ids``, or all), holding its lease;
        ``PipelineBusy`` while a worker runs it."""
        raise NotImplementedError

    def add_maintenance(
        self, pipeline: str, *, starts_at: float, ends_at: float, reason: str
    ) -> dict[str, Any]:
        """Add a maintenance window: healing actions for the pipeline are suppressed in it."""
        raise NotImplementedError

    def in_maintenance(self, pipeline: str, at: float | None = None) -> bool:
        """True inside one of the pipeline's windows (YAML or stored)."""
        raise NotImplementedError


__all__: Sequence[str] = ("Control",)
