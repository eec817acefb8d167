"""The healing ledger: every incident, what was tried, how it ended.

An incident opens at the first failure seen on one of a pipeline's dependencies (a retried call,
an opened breaker, a fallback tier taking over, a failed run) and stays open, across runs, until
the failure is over: the call recovered, the breaker closed, the primary tier is back, or a run of
the pipeline succeeded (healed). While a fallback tier serves, the incident is ``degraded``: the
run succeeds but the data is not the primary's yet. When healing gives up it is escalated, and
healed when a later run succeeds. Each healing action is a row with its outcome, so
``mendflow incidents`` can tell the whole story and the KPIs can be computed from it.

Passwords never reach the ledger: dependencies, evidence and details are stored with any password
masked (a driver's error text may quote its connection string), and dependencies are looked up
masked the same way.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from mendflow._redact import redact
from mendflow.remediation.diagnosis import Diagnosis
from mendflow.state._connect import scrubbed
from mendflow.state.schema import incident_actions, incidents
from mendflow.state.store import StateStore

OPEN, DEGRADED, HEALED, ESCALATED = "open", "degraded", "healed", "escalated"


@dataclass(frozen=True, slots=True)
class Incident:
    """An incident as the ledger holds it."""

    incident_id: str
    pipeline: str
    failure_class: str
    status: str
    escalated: bool
    dependency: str = ""


class Ledger:
    """Incidents and their actions, in the state store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def current(self, pipeline: str, *, dependency: str | None = None) -> Incident | None:
        """The pipeline's newest incident that has not healed (of ``dependency``, if given)."""
        found = self.unhealed(pipeline, dependency=dependency)
        return found[0] if found else None

    def latest(self, pipeline: str, *, dependency: str) -> Incident | None:
        """The newest incident of ``dependency`` in ``pipeline``, healed or not."""
        query = (
            sa.select(incidents)
            .where(incidents.c.pipeline == pipeline, incidents.c.dependency == redact(dependency))
            .order_by(incidents.c.detected_at.desc(), incidents.c.incident_id)
            .limit(1)
        )
        with self.store.engine.connect() as con:
            row = con.execute(query).first()
        return None if row is None else _incident(row._mapping)

    def unhealed(self, pipeline: str, *, dependency: str | None = None) -> list[Incident]:
        """The pipeline's incidents that have not healed, newest first."""
        query = (
            sa.select(incidents)
            .where(incidents.c.pipeline == pipeline, incidents.c.status != HEALED)
            .order_by(incidents.c.detected_at.desc(), incidents.c.incident_id)
        )
        if dependency is not None:
            query = query.where(incidents.c.dependency == redact(dependency))
        with self.store.engine.connect() as con:
            return [_incident(row._mapping) for row in con.execute(query)]

    def open(self, *, pipeline: str, run_id: str, diagnosis: Diagnosis, at: float) -> Incident:
        """Record a new incident for ``pipeline``."""
        incident_id = uuid.uuid4().hex
        dependency = redact(diagnosis.dependency)
        with self.store.engine.begin() as con:
            con.execute(
                incidents.insert().values(
                    incident_id=incident_id, pipeline=pipeline, run_id=run_id,
                    dependency=dependency, failure_class=str(diagnosis.failure_class),
                    status=OPEN, detected_at=at, escalated=False,
                    evidence=json.dumps(scrubbed(diagnosis.evidence()), sort_keys=True),
                )
            )
        return Incident(
            incident_id, pipeline, str(diagnosis.failure_class), OPEN, False, dependency
        )

    def act(self, incident_id: str, *, action: str, outcome: str, detail: str, at: float) -> None:
        """Record one healing action and how it went."""
        with self.store.engine.begin() as con:
            con.execute(
                incident_actions.insert().values(
                    incident_id=incident_id, action=action, outcome=outcome,
                    detail=redact(detail), at=at,
                )
            )

    def actions_taken(self, incident_id: str, *, excluding: Collection[str] = ()) -> int:
        """How many actions the incident has had (not counting ``excluding`` actions)."""
        query = sa.select(sa.func.count()).where(
            incident_actions.c.incident_id == incident_id,
            incident_actions.c.action.not_in(list(excluding)),
        )
        with self.store.engine.connect() as con:
            return int(con.execute(query).scalar_one())

    def spent(
        self, pipeline: str, *, since: float, excluding: Collection[str] = ()
    ) -> tuple[int, float | None]:
        """The pipeline's actions at or after ``since`` (not counting ``excluding`` actions), and
        when the latest of them was taken."""
        query = (
            sa.select(sa.func.count(), sa.func.max(incident_actions.c.at))
            .select_from(
                incident_actions.join(
                    incidents, incident_actions.c.incident_id == incidents.c.incident_id
                )
            )
            .where(
                incidents.c.pipeline == pipeline,
                incident_actions.c.at >= since,
                incident_actions.c.action.not_in(list(excluding)),
            )
        )
        with self.store.engine.connect() as con:
            count, latest = con.execute(query).one()
        return int(count), latest

    def degrade(self, incident_id: str) -> None:
        """Mark an open incident degraded: a fallback serves while the dependency is down."""
        self._set_status(incident_id, DEGRADED, where_status=OPEN)

    def escalate(self, incident_id: str) -> bool:
        """Mark escalated; True only the first time (so a human is paged once per incident)."""
        with self.store.engine.begin() as con:
            done = con.execute(
                incidents.update()
                .where(incidents.c.incident_id == incident_id, incidents.c.escalated.is_(False))
                .values(escalated=True, status=ESCALATED)
            )
        return bool(done.rowcount)

    def heal(self, incident_id: str, *, at: float) -> None:
        """Close the incident: the failure is over."""
        with self.store.engine.begin() as con:
            con.execute(
                incidents.update()
                .where(incidents.c.incident_id == incident_id, incidents.c.status != HEALED)
                .values(status=HEALED, recovered_at=at)
            )

    def _set_status(self, incident_id: str, status: str, *, where_status: str) -> None:
        with self.store.engine.begin() as con:
            con.execute(
                incidents.update()
                .where(incidents.c.incident_id == incident_id,
                       incidents.c.status == where_status)
                .values(status=status)
            )

    def incidents(self, *, pipeline: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Incidents, newest first, each with its actions."""
        query = sa.select(incidents).order_by(incidents.c.detected_at.desc()).limit(limit)
        if pipeline is not None:
            query = query.where(incidents.c.pipeline == pipeline)
        with self.store.engine.connect() as con:
            rows = [dict(r._mapping) for r in con.execute(query)]
            for row in rows:
                row["evidence"] = json.loads(row["evidence"])
                row["actions"] = self._actions(con, row["incident_id"])
        return rows

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        """One incident with its actions, by id (or a unique prefix of it)."""
        query = sa.select(incidents).where(
            incidents.c.incident_id.startswith(incident_id, autoescape=True)
        )
        with self.store.engine.connect() as con:
            rows = con.execute(query.limit(2)).all()
            if len(rows) != 1:
                return None
            row = dict(rows[0]._mapping)
            row["evidence"] = json.loads(row["evidence"])
            row["actions"] = self._actions(con, row["incident_id"])
        return row

    def _actions(self, con: sa.Connection, incident_id: str) -> list[dict[str, Any]]:
        query = (
            sa.select(incident_actions.c.action, incident_actions.c.outcome,
                      incident_actions.c.detail, incident_actions.c.at)
            .where(incident_actions.c.incident_id == incident_id)
            .order_by(incident_actions.c.id)
        )
        return [dict(r._mapping) for r in con.execute(query)]


def _incident(row: Any) -> Incident:
    return Incident(
        row["incident_id"], row["pipeline"], row["failure_class"], row["status"],
        bool(row["escalated"]), row["dependency"],
    )
