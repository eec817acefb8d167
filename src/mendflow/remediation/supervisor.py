"""Run a pipeline under the playbook: diagnose each failure, act, record, escalate once.

Loads are exactly-once, so restarting a run from its committed checkpoint is always safe: that
is the backbone of healing. A failure is diagnosed; the playbook names an action; the action is
recorded in the ledger and carried out (wait, restart, shrink the batch); the run goes again.
When the playbook escalates, or the incident has used its action budget, a human is paged once
and the error is raised. A later successful run heals the incident (and says so to whoever was
paged).
"""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Callable, Iterable, Sequence

from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.exceptions import MendflowError
from mendflow.pipeline import Pipeline, RunResult
from mendflow.remediation.diagnosis import Diagnosis, diagnose
from mendflow.remediation.escalation import Alert, Notifier
from mendflow.remediation.ledger import Incident, Ledger
from mendflow.remediation.playbook import DEFAULT_PLAYBOOK, Action, Rule, Situation, decide
from mendflow.resilience.retry import Retry
from mendflow.state.store import StateStore
from mendflow.typing import Hook

#: Waits between restarts from the checkpoint: full jitter from 1 s, capped at a minute.
RESTART_BACKOFF = Retry(base_s=1.0, cap_s=60.0)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Healing:
    """How hard to try: actions per incident before paging, and the wait between restarts."""

    playbook: Sequence[Rule] = DEFAULT_PLAYBOOK
    max_actions: int = 6
    backoff: Retry = RESTART_BACKOFF


DEFAULT_HEALING = Healing()


def run_healing(
    pipeline: Pipeline,
    *,
    store: StateStore,
    healing: Healing = DEFAULT_HEALING,
    notifiers: Iterable[Notifier] = (),
    hooks: Iterable[Hook] = (),
    clock: Clock = SYSTEM_CLOCK,
    draw: Callable[[], float] = random.random,
) -> RunResult:
    """Run ``pipeline`` until it succeeds or healing is spent (then raise the last error)."""
    ledger, notify = Ledger(store), _fan_out(list(notifiers))
    hooks = list(hooks)
    incident = ledger.current(pipeline.name)
    while True:
        try:
            result = pipeline.run(hooks=hooks, state=store, clock=clock)
        except (MendflowError, MemoryError) as exc:
            diagnosis = diagnose(exc)
            incident = incident or ledger.open(
                pipeline=pipeline.name, run_id="", diagnosis=diagnosis, at=clock.now()
            )
            pipeline = _heal_once(pipeline, incident, diagnosis, exc, ledger, healing, notify,
                                  clock, draw)
            continue
        if incident is not None:
            ledger.act(incident.incident_id, action="verify", outcome="succeeded",
                       detail=f"run {result.run_id} succeeded", at=clock.now())
            ledger.heal(incident.incident_id, at=clock.now())
            if incident.escalated:  # paged in an earlier run; escalating here always raises
                notify(_alert("resolved", incident, diagnosis=None, actions=()))
        return result


def _heal_once(
    pipeline: Pipeline,
    incident: Incident,
    diagnosis: Diagnosis,
    exc: BaseException,
    ledger: Ledger,
    healing: Healing,
    notify: Callable[[Alert], None],
    clock: Clock,
    draw: Callable[[], float],
) -> Pipeline:
    """Choose and carry out one action; raise ``exc`` when the choice is to escalate."""
    taken = ledger.actions_taken(incident.incident_id)
    size = getattr(pipeline.source, "batch_size", None)
    action = decide(healing.playbook, Situation(diagnosis, taken, size))
    if taken >= healing.max_actions:
        action = Action.ESCALATE
    now = clock.now()
    if action is Action.ESCALATE:
        first = ledger.escalate(incident.incident_id)
        ledger.act(incident.incident_id, action=str(action),
                   outcome="paged" if first else "already_paged", detail=str(exc), at=now)
        if first:
            tried = tuple(str(a["action"]) for a in _actions(ledger, incident))
            notify(_alert("escalated", incident, diagnosis=diagnosis, actions=tried))
        raise exc
    if action is Action.SHRINK_BATCH and size:
        pipeline = _with_batch_size(pipeline, max(1_000, size // 2))
        ledger.act(incident.incident_id, action=str(action), outcome="tried",
                   detail=f"batch_size {size} -> {max(1_000, size // 2)}", at=now)
        return pipeline
    delay = getattr(exc, "retry_after_s", None)
    if delay is None:
        delay = healing.backoff.backoff_s(taken + 1, draw)
    ledger.act(incident.incident_id, action=str(action), outcome="tried",
               detail=f"{diagnosis.error_type}; waited {delay:.2f}s", at=now)
    if delay > 0:
        clock.sleep(delay)
    return pipeline


def _with_batch_size(pipeline: Pipeline, size: int) -> Pipeline:
    source = copy.copy(pipeline.source)
    source.batch_size = size  # type: ignore[attr-defined]  # only sources that have one shrink
    return dataclasses.replace(pipeline, source=source)


def _actions(ledger: Ledger, incident: Incident) -> list[dict[str, object]]:
    found = ledger.incident(incident.incident_id)
    return [a for a in (found or {}).get("actions", []) if a["action"] != "escalate"]


def _alert(
    kind: str, incident: Incident, *, diagnosis: Diagnosis | None, actions: tuple[str, ...]
) -> Alert:
    return Alert(
        kind=kind, incident_id=incident.incident_id, pipeline=incident.pipeline,
        failure_class=incident.failure_class,
        dependency=diagnosis.dependency if diagnosis else "",
        message=diagnosis.message if diagnosis else "", actions=actions,
    )


def _fan_out(notifiers: list[Notifier]) -> Callable[[Alert], None]:
    def notify(alert: Alert) -> None:
        for notifier in notifiers:
            notifier.notify(alert)

    return notify
