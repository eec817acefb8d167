"""The JSON API's request and response models: what the OpenAPI schema says.

Jobs and alert results are the frozen dataclasses the service already returns (``Job``,
``AlertResult``); pydantic reads them as they are. Models of other stored rows (``_Open``)
name the fields that are always there and allow more, so a column added to the store does not
break a client.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from mendflow.server.alerts import AlertResult
from mendflow.state.jobs import Job


class _Open(BaseModel):
    """Models of stored rows: the fields named are always there; more may follow."""

    model_config = ConfigDict(extra="allow")


class ErrorOut(BaseModel):
    """Every error: what went wrong and what to do."""

    error: str


class StatusOut(BaseModel):
    """Liveness or readiness."""

    status: str


class RunOut(_Open):
    """A run of a pipeline (times as ISO 8601)."""

    run_id: str
    pipeline: str
    status: str
    started_at: str | None = None
    finished_at: str | None = None
    rows_read: int | None = None
    rows_loaded: int | None = None
    dead_letters: int | None = None
    error: str | None = None


class PipelineOut(_Open):
    """A served pipeline: health, freshness, schedule, pause, incidents, current job."""

    name: str
    schedule: str | None
    next_at: float | None
    freshness_s: float | None
    last_success_at: float | None
    freshness_lag_s: float | None
    stale: bool
    health: str
    paused: bool
    paused_reason: str
    in_maintenance: bool
    open_incidents: int
    last_run: RunOut | None
    running_job: Job | None
    queued_job: Job | None


class EventOut(_Open):
    """One event of a run."""

    kind: str
    at: str


class ActionOut(_Open):
    """One healing action of an incident."""

    action: str
    outcome: str
    detail: str
    at: float


class IncidentOut(_Open):
    """An incident of the healing ledger with its actions."""

    incident_id: str
    pipeline: str
    dependency: str
    failure_class: str
    status: str
    detected_at: float
    recovered_at: float | None
    escalated: bool
    actions: list[ActionOut]


class DeadLetterOut(_Open):
    """A record set aside, with the checks it failed."""

    id: int
    pipeline: str
    run_id: str
    stage: str
    reason: str
    checks: list[dict[str, Any]]
    record: str
    encoding: str
    attempts: int
    first_seen: str
    last_seen: str


class ServiceLevelOut(_Open):
    """A pipeline's KPIs (None where nothing is measured yet)."""

    pipeline: str
    freshness_s: float
    availability: float | None
    incidents: int
    open_incidents: int
    mttr_s: float | None
    auto_heal_rate: float | None


class BreakerOut(_Open):
    """A dependency's shared circuit breaker."""

    dependency: str
    state: str
    opened_at: float | None
    open_for_s: float | None
    reason: str


class RunQueuedOut(BaseModel):
    """The job queued (or the one that was queued already)."""

    job: Job | None
    created: bool


class PausedOut(BaseModel):
    """The pipeline's pause after the call; ``changed`` is False if it already was so."""

    pipeline: str
    paused: bool
    changed: bool


class WindowOut(_Open):
    """A maintenance window stored through the API (epoch seconds)."""

    id: int
    pipeline: str
    starts_at: float
    ends_at: float
    reason: str


class ReplayOut(BaseModel):
    """What a replay did."""

    loaded: int
    failed: int
    skipped: int
    poison: int
    blocked: list[str]


class BreakerMoveOut(BaseModel):
    """A breaker before and after an operator's reset or probe."""

    dependency: str
    previous: str | None = None
    state: str


class AlertsOut(BaseModel):
    """The outcome of each alert of a notification."""

    results: list[AlertResult]


class PauseIn(BaseModel):
    """Why the pipeline is paused."""

    reason: str = Field(default="", max_length=2000)


class MaintenanceIn(BaseModel):
    """A maintenance window in epoch seconds."""

    starts_at: float = Field(allow_inf_nan=False)
    ends_at: float = Field(allow_inf_nan=False)
    reason: str = Field(default="", max_length=2000)


class ReplayIn(BaseModel):
    """Which dead letters to replay (all of the pipeline's when ``ids`` is absent)."""

    ids: list[Annotated[int, Field(ge=0, le=2**62)]] | None = Field(default=None,
                                                                      max_length=10_000)


class BreakerIn(BaseModel):
    """Which dependency's breaker."""

    dependency: str = Field(min_length=1, max_length=512)


__all__ = (
    "ActionOut",
    "AlertsOut",
    "BreakerIn",
    "BreakerMoveOut",
    "BreakerOut",
    "DeadLetterOut",
    "ErrorOut",
    "EventOut",
    "IncidentOut",
    "MaintenanceIn",
    "PauseIn",
    "PausedOut",
    "PipelineOut",
    "ReplayIn",
    "ReplayOut",
    "RunOut",
    "RunQueuedOut",
    "ServiceLevelOut",
    "StatusOut",
    "WindowOut",
)
