"""Healing that happens inside a run, put on record as it happens.

A run heals small failures by itself: a call is retried, a breaker opens and later closes, a
fallback tier takes over, a bad batch is quarantined. ``IncidentRecorder`` is a run hook that
turns those events into ledger incidents and actions, so ``mendflow incidents`` shows every
healing action, not only the ones between runs::

    retry.scheduled     open (or join) the incident of that dependency; action ``retry``, tried
    retry.recovered     action ``retry`` succeeded; the incident heals
    breaker.changed     open: ``circuit_breaker`` tried (calls fail fast); half_open: ``probe``;
                        closed: ``circuit_breaker`` succeeded, healed
    tier.switched       away from a tier: ``switch_tier`` tried, the incident is degraded (a
                        fallback serves); back to the primary: ``switch_tier`` succeeded, healed
    batch.quarantined   ``quarantine`` succeeded on the pipeline's bad-data incident, healed
    run.finished        every incident of the pipeline still ``open`` (not escalated) heals: the
                        run went through; a ``degraded`` one heals too when its dependency
                        served this run's batches itself (a primary back with nothing new)

The runner adds one recorder per run when it has a state store. An incident is one per
dependency while it lasts, however many retries it takes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mendflow._redact import redact
from mendflow.events import (
    BatchQuarantined,
    BatchRead,
    BreakerChanged,
    Event,
    Recovered,
    RetryScheduled,
    RunFinished,
    TierSwitched,
)
from mendflow.remediation.diagnosis import Diagnosis, FailureClass, failure_class_of
from mendflow.remediation.ledger import DEGRADED, OPEN, Incident, Ledger
from mendflow.remediation.playbook import Action


class IncidentRecorder:
    """A run hook that records in-run healing in the ledger (see the module docstring)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._served: set[str] = set()  # sources (tiers) that served a batch in this run
        self._switched: set[str] = set()  # tiers a fallback switched away from in this run
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            BatchRead: self._read,
            RetryScheduled: self._retry,
            Recovered: self._recovered,
            BreakerChanged: self._breaker,
            TierSwitched: self._tier,
            BatchQuarantined: self._quarantined,
            RunFinished: self._finished,
        }

    def __call__(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    # -- handlers -------------------------------------------------------------------------------

    def _retry(self, event: RetryScheduled) -> None:
        incident = self._incident(
            event, event.dependency, event.error_type, event.error, status=event.status
        )
        detail = (
            f"attempt {event.attempt} failed ({event.error_type}); "
            f"retrying in {event.delay_s:.2f}s"
        )
        self._act(incident, event, Action.RETRY, "tried", detail)

    def _recovered(self, event: Recovered) -> None:
        incident = self.ledger.current(event.pipeline, dependency=event.dependency)
        if incident is None or incident.status != OPEN:
            return
        detail = f"{event.dependency} answered on attempt {event.attempts}"
        self._act(incident, event, Action.RETRY, "succeeded", detail)
        if not self._tripped(incident):  # a half-open breaker heals when it closes
            self.ledger.heal(incident.incident_id, at=event.at)

    def _breaker(self, event: BreakerChanged) -> None:
        if event.state == "closed":
            incident = self.ledger.current(event.pipeline, dependency=event.dependency)
            incident = incident or self.ledger.latest(event.pipeline, dependency=event.dependency)
            if incident is not None:
                detail = f"breaker closed: {event.reason}"
                self._act(incident, event, Action.CIRCUIT_BREAKER, "succeeded", detail)
                if incident.status == OPEN:
                    self.ledger.heal(incident.incident_id, at=event.at)
            return
        incident = self._incident(event, event.dependency, "DependencyDown", event.reason)
        if event.state == "open":
            detail = f"breaker opened, failing fast: {event.reason}"
            self._act(incident, event, Action.CIRCUIT_BREAKER, "tried", detail)
        else:
            detail = f"breaker half-open: {event.reason}"
            self._act(incident, event, Action.PROBE, "tried", detail)

    def _read(self, event: BatchRead) -> None:
        self._served.add(redact(event.source))  # the ledger keeps dependencies masked

    def _tier(self, event: TierSwitched) -> None:
        if event.error_type:
            self._switched.add(redact(event.dependency))
        detail = f"{event.previous} -> {event.tier}: {event.reason}"
        if not event.error_type:  # back to the primary
            incident = self.ledger.current(event.pipeline, dependency=event.dependency)
            if incident is not None:
                self._act(incident, event, Action.SWITCH_TIER, "succeeded", detail)
                self.ledger.heal(incident.incident_id, at=event.at)
            return
        incident = self._incident(event, event.dependency, event.error_type, event.reason)
        self._act(incident, event, Action.SWITCH_TIER, "tried", detail)
        self.ledger.degrade(incident.incident_id)

    def _quarantined(self, event: BatchQuarantined) -> None:
        incident = self._incident(event, "", event.error_type, event.reason, quarantine=True)
        detail = f"batch {event.batch_id}: {event.rows} rows set aside: {event.reason}"
        self._act(incident, event, Action.QUARANTINE, "succeeded", detail)
        self.ledger.heal(incident.incident_id, at=event.at)

    def _finished(self, event: RunFinished) -> None:
        back = self._served - self._switched
        for incident in self.ledger.unhealed(event.pipeline):
            if incident.status == DEGRADED and incident.dependency in back:
                detail = f"{incident.dependency} served the run's batches again"
                self._act(incident, event, Action.SWITCH_TIER, "succeeded", detail)
                self.ledger.heal(incident.incident_id, at=event.at)
            elif incident.status == OPEN:
                self.ledger.heal(incident.incident_id, at=event.at)

    # -- helpers --------------------------------------------------------------------------------

    def _tripped(self, incident: Incident) -> bool:
        """True when the incident's breaker opened and has not closed since."""
        found = self.ledger.incident(incident.incident_id) or {}
        moves = [a["outcome"] for a in found.get("actions", [])
                 if a["action"] == Action.CIRCUIT_BREAKER]
        return bool(moves) and moves[-1] == "tried"

    def _incident(
        self, event: Event, dependency: str, error_type: str, message: str, *,
        status: int | None = None, quarantine: bool = False,
    ) -> Incident:
        """The dependency's unhealed incident, or a new one (for a quarantine: the pipeline's
        bad-data incident)."""
        if quarantine:
            found = [
                i for i in self.ledger.unhealed(event.pipeline)
                if i.failure_class == FailureClass.BAD_DATA
            ]
            if found:
                return found[0]
        else:
            existing = self.ledger.current(event.pipeline, dependency=dependency)
            if existing is not None:
                return existing
        failure = failure_class_of(error_type)
        diagnosis = Diagnosis(failure, dependency, error_type, status, message)
        return self.ledger.open(
            pipeline=event.pipeline, run_id=event.run_id, diagnosis=diagnosis, at=event.at
        )

    def _act(
        self, incident: Incident, event: Event, action: str, outcome: str, detail: str
    ) -> None:
        self.ledger.act(
            incident.incident_id, action=str(action), outcome=outcome, detail=detail, at=event.at
        )
