"""The Alertmanager webhook: each alert becomes a healing action, recorded in the ledger.

Alertmanager posts its webhook payload (version 4) to ``POST /hooks/alertmanager``; every alert
in it is handled once per (fingerprint, startsAt), kept in ``mf_alerts``:

- firing, first time: an incident opens (class by alert, dependency from the ``dependency``
  label or ``alert:<alertname>``), its ``alert``/``received`` action holds the summary, then
  the action runs through ``Control`` on that incident: ``rerun`` queues a run carrying the
  incident (the worker verifies and heals it), ``probe``/``reset`` move the ``dependency``
  label's breaker, ``pause`` pauses the pipeline, ``none`` only records. Inside one of the
  pipeline's maintenance windows, or while it is paused, the action is recorded ``suppressed``
  and not taken.
- firing again (Alertmanager repeats notifications): nothing new.
- resolved: ``resolved_at`` is set, the incident gets an ``alert``/``resolved`` action and
  heals (the condition the alert watched is over), once.

The action is the ``mendflow_action`` label if set (rerun, probe, reset, pause, none), else
the alert's name decides (``ACTIONS``). An alert naming a pipeline that is not served is
recorded and answered 200 with its outcome: Alertmanager would retry any other status forever.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from mendflow._redact import redact
from mendflow.exceptions import MendflowError
from mendflow.remediation.diagnosis import Diagnosis, FailureClass
from mendflow.server.control import Control
from mendflow.state.schema import alerts, runs

log = logging.getLogger("mendflow.alerts")

#: The action each of mendflow's own alerts asks for (``deploy/`` holds the rules).
ACTIONS: Mapping[str, str] = {
    "MendflowPipelineStale": "rerun",
    "MendflowPipelineErrorRate": "rerun",
    "MendflowBreakerOpenTooLong": "probe",
    "MendflowDeadLettersGrowing": "none",
}
#: The failure class of the incident each alert opens.
CLASSES: Mapping[str, FailureClass] = {
    "MendflowPipelineStale": FailureClass.STALE,
    "MendflowPipelineErrorRate": FailureClass.TRANSIENT,
    "MendflowBreakerOpenTooLong": FailureClass.DEPENDENCY_DOWN,
    "MendflowDeadLettersGrowing": FailureClass.BAD_DATA,
}
_BY_ACTION: Mapping[str, FailureClass] = {
    "rerun": FailureClass.TRANSIENT, "pause": FailureClass.BAD_DATA,
    "probe": FailureClass.DEPENDENCY_DOWN, "reset": FailureClass.DEPENDENCY_DOWN,
    "none": FailureClass.TRANSIENT,
}
KNOWN_ACTIONS = frozenset(_BY_ACTION)
ACTION_LABEL = "mendflow_action"


class AlertIn(BaseModel):
    """One alert of an Alertmanager notification."""

    model_config = ConfigDict(extra="allow")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str = Field(min_length=1, max_length=64)  # noqa: N815 - Alertmanager's names
    endsAt: str = ""  # noqa: N815
    generatorURL: str = ""  # noqa: N815
    fingerprint: str = Field(min_length=1, max_length=64)


class AlertmanagerPayload(BaseModel):
    """An Alertmanager webhook notification (payload version 4)."""

    model_config = ConfigDict(extra="allow")

    version: str = "4"
    groupKey: str = ""  # noqa: N815
    truncatedAlerts: int = 0  # noqa: N815
    status: Literal["firing", "resolved"]
    receiver: str
    groupLabels: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    commonLabels: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    commonAnnotations: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    externalURL: str = ""  # noqa: N815
    alerts: list[AlertIn]


@dataclass(frozen=True, slots=True)
class AlertResult:
    """What one alert of a notification led to; ``new`` is False for a repeat."""

    fingerprint: str
    starts_at: str
    alertname: str
    pipeline: str
    status: str
    action: str
    outcome: str
    incident_id: str | None
    new: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class AlertHandler:
    """Turns Alertmanager notifications into actions through ``control``."""

    def __init__(self, control: Control) -> None:
        self.control = control

    def handle(self, payload: AlertmanagerPayload) -> list[AlertResult]:
        """Handle every alert of one notification, in order."""
        return [self.alert(alert) for alert in payload.alerts]

    def alert(self, alert: AlertIn) -> AlertResult:
        """Handle one alert (once per fingerprint and start)."""
        if alert.status == "resolved":
            return self._resolved(alert)
        return self._firing(alert)

    # -- firing --------------------------------------------------------------------------------

    def _firing(self, alert: AlertIn) -> AlertResult:
        name, pipeline, action = _name(alert), alert.labels.get("pipeline", ""), _action(alert)
        if not self._claim(alert, name, pipeline):
            row = self._row(alert)
            return _result(alert, name, pipeline, row, new=False)
        if pipeline and pipeline not in self.control.catalog:
            return self._settle(alert, name, pipeline, action, "unknown_pipeline", None)
        incident_id = self._open(alert, name, pipeline, action)
        outcome = self._perform(alert, name, pipeline, action, incident_id)
        return self._settle(alert, name, pipeline, action, outcome, incident_id)

    def _open(self, alert: AlertIn, name: str, pipeline: str, action: str) -> str:
        """Open the alert's incident and record that the alert came in."""
        control, now = self.control, self.control.clock.now()
        dependency = alert.labels.get("dependency") or f"alert:{name}"
        failure = CLASSES.get(name, _BY_ACTION[action])
        summary = _summary(alert, name)
        diagnosis = Diagnosis(failure, dependency, name, None, summary)
        incident = control.ledger.open(
            pipeline=pipeline, run_id=self._last_run(pipeline), diagnosis=diagnosis, at=now
        )
        control.ledger.act(incident.incident_id, action="alert", outcome="received",
                           detail=summary, at=now)
        return incident.incident_id

    def _perform(
        self, alert: AlertIn, name: str, pipeline: str, action: str, incident_id: str
    ) -> str:
        """Take the action on the incident (unless suppressed); its outcome."""
        control = self.control
        why = self._suppressed(pipeline) if action != "none" else None
        if why is not None:
            control.ledger.act(incident_id, action=_ledger_action(action),
                               outcome="suppressed", detail=why, at=control.clock.now())
            return "suppressed"
        dependency = alert.labels.get("dependency", "")
        if action == "none":
            return "recorded"
        if action in ("rerun", "pause") and not pipeline:
            return self._refuse(incident_id, action, "no_pipeline",
                                f"alert {name} names no pipeline label")
        if action in ("probe", "reset") and not dependency:
            return self._refuse(incident_id, action, "no_dependency",
                                f"alert {name} names no dependency label")
        try:
            return self._do(action, pipeline, dependency, name, incident_id)
        except LookupError as exc:
            return self._refuse(incident_id, action, "not_found", str(exc))
        except MendflowError as exc:  # the store or queue refused: recorded, not retried
            return self._refuse(incident_id, action, "failed", f"{type(exc).__name__}: {exc}")

    def _do(self, action: str, pipeline: str, dependency: str, name: str, incident_id: str
            ) -> str:
        control = self.control
        if action == "rerun":
            job = control.rerun(pipeline, reason="alert", incident_id=incident_id)
            return "queued" if job is not None else "already_queued"
        if action == "pause":
            changed = control.pause(pipeline, reason=f"alert {name}", incident_id=incident_id)
            return "paused" if changed else "already_paused"
        if action == "reset":
            control.reset_breaker(dependency, incident_id=incident_id)
            return "closed"
        return control.probe_breaker(dependency, incident_id=incident_id)

    def _refuse(self, incident_id: str, action: str, outcome: str, detail: str) -> str:
        self.control.ledger.act(incident_id, action=_ledger_action(action), outcome=outcome,
                                detail=detail, at=self.control.clock.now())
        return outcome

    def _suppressed(self, pipeline: str) -> str | None:
        """Why actions on ``pipeline`` are suppressed now (None: they are not)."""
        if not pipeline:
            return None
        control = self.control
        if control.in_maintenance(pipeline):
            return f"{pipeline} is in a maintenance window"
        state = control.schedules.state(pipeline)
        if state.paused:
            return f"{pipeline} is paused" + (f": {state.paused_reason}"
                                              if state.paused_reason else "")
        return None

    # -- resolved ------------------------------------------------------------------------------

    def _resolved(self, alert: AlertIn) -> AlertResult:
        name, pipeline = _name(alert), alert.labels.get("pipeline", "")
        now = self.control.clock.now()
        if self._claim(alert, name, pipeline, resolved_at=now):  # firing never seen
            return self._settle(alert, name, pipeline, "", "resolved", None)
        done = sa.update(alerts).where(*_key(alert), alerts.c.resolved_at.is_(None)).values(
            resolved_at=now, status="resolved")
        with self.control.store.engine.begin() as con:
            first = con.execute(done).rowcount == 1
        row = self._row(alert)
        incident_id = row["incident_id"] if row else None
        if first and incident_id:
            ledger = self.control.ledger
            ledger.act(incident_id, action="alert", outcome="resolved",
                       detail=f"{name} resolved", at=now)
            ledger.heal(incident_id, at=now)
            log.info("alert %s resolved (pipeline %r)", name, pipeline, extra={
                "incident_id": incident_id, "pipeline": pipeline, "alertname": name,
                "fingerprint": alert.fingerprint})
        return _result(alert, name, pipeline, row, new=first)

    # -- mf_alerts -----------------------------------------------------------------------------

    def _claim(self, alert: AlertIn, name: str, pipeline: str, *,
               resolved_at: float | None = None) -> bool:
        """Insert the alert's row; False when it is there already (a repeat)."""
        row = {
            "fingerprint": alert.fingerprint, "starts_at": alert.startsAt,
            "alertname": name[:128], "pipeline": pipeline[:128], "status": alert.status,
            "received_at": self.control.clock.now(), "resolved_at": resolved_at,
            "labels": json.dumps({k: redact(v) for k, v in alert.labels.items()},
                                 sort_keys=True),
        }
        try:
            with self.control.store.engine.begin() as con:
                con.execute(alerts.insert().values(**row))
        except sa.exc.IntegrityError:
            return False
        return True

    def _settle(self, alert: AlertIn, name: str, pipeline: str, action: str, outcome: str,
                incident_id: str | None) -> AlertResult:
        with self.control.store.engine.begin() as con:
            con.execute(sa.update(alerts).where(*_key(alert)).values(
                action=action, outcome=outcome, incident_id=incident_id))
        log.info("alert %s %s (pipeline %r): %s -> %s", name, alert.status, pipeline,
                 action or "-", outcome, extra={
                     "incident_id": incident_id, "pipeline": pipeline, "alertname": name,
                     "fingerprint": alert.fingerprint, "action": action, "outcome": outcome})
        return AlertResult(alert.fingerprint, alert.startsAt, name, pipeline, alert.status,
                           action, outcome, incident_id, True)

    def _row(self, alert: AlertIn) -> dict[str, Any] | None:
        with self.control.store.engine.connect() as con:
            row = con.execute(sa.select(alerts).where(*_key(alert))).first()
        return None if row is None else dict(row._mapping)

    def _last_run(self, pipeline: str) -> str:
        if not pipeline:
            return ""
        query = sa.select(runs.c.run_id).where(runs.c.pipeline == pipeline).order_by(
            runs.c.started_at.desc()).limit(1)
        with self.control.store.engine.connect() as con:
            return str(con.execute(query).scalar() or "")

    def recent(self, *, limit: int = 50) -> list[dict[str, Any]]:
        """The alerts received, newest first."""
        query = sa.select(alerts).order_by(alerts.c.received_at.desc()).limit(limit)
        with self.control.store.engine.connect() as con:
            rows = [dict(r._mapping) for r in con.execute(query)]
        for row in rows:
            row["labels"] = json.loads(row["labels"] or "{}")
        return rows


def _key(alert: AlertIn) -> tuple[sa.ColumnElement[bool], ...]:
    return (alerts.c.fingerprint == alert.fingerprint, alerts.c.starts_at == alert.startsAt)


def _name(alert: AlertIn) -> str:
    return alert.labels.get("alertname", "") or "unnamed"


def _action(alert: AlertIn) -> str:
    asked = alert.labels.get(ACTION_LABEL, "").strip().lower()
    if asked in KNOWN_ACTIONS:
        return asked
    return ACTIONS.get(_name(alert), "none")


def _ledger_action(action: str) -> str:
    """The ledger's name of an alert action (``playbook.Action`` values)."""
    return {"reset": "reset_breaker"}.get(action, action)


def _summary(alert: AlertIn, name: str) -> str:
    text = alert.annotations.get("summary") or alert.annotations.get("description") or ""
    return redact(f"{name}: {text}" if text else name)


def _result(alert: AlertIn, name: str, pipeline: str, row: dict[str, Any] | None, *,
            new: bool) -> AlertResult:
    row = row or {}
    return AlertResult(alert.fingerprint, alert.startsAt, name, pipeline, alert.status,
                       str(row.get("action") or ""), str(row.get("outcome") or ""),
                       row.get("incident_id"), new)


__all__: Sequence[str] = ("ACTIONS", "CLASSES", "AlertHandler", "AlertIn", "AlertResult",
                          "AlertmanagerPayload")
