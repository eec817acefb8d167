"""Run a pipeline under the playbook: diagnose each failure, act, record, escalate once.

Loads are exactly-once, so restarting a run from its committed checkpoint is always safe: that
is the backbone of healing. A failure is diagnosed; the playbook names an action; the action is
recorded in the ledger and carried out (wait, roll back and restart, shrink the batch,
quarantine the batch); the run goes again. When the playbook escalates, or the pipeline has spent
its action budget for the window, a human is paged once per incident and the error is raised. A
later successful run heals the incident (and says so to whoever was paged).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import random
from collections.abc import Callable, Iterable, Sequence
from typing import NoReturn

from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.exceptions import ConfigError, DependencyDown, MendflowError
from mendflow.pipeline import Pipeline, RunResult
from mendflow.remediation.diagnosis import Diagnosis, diagnose
from mendflow.remediation.escalation import Alert, Notifier
from mendflow.remediation.ledger import Incident, Ledger
from mendflow.remediation.playbook import (
    DEFAULT_PLAYBOOK,
    IN_RUN,
    Action,
    Rule,
    Situation,
    decide,
)
from mendflow.resilience.retry import Retry
from mendflow.state.store import StateStore
from mendflow.typing import Hook

#: Waits between restarts from the checkpoint: full jitter from 1 s, capped at a minute.
RESTART_BACKOFF = Retry(base_s=1.0, cap_s=60.0)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Healing:
    """How hard to try before paging a human.

    At most ``max_actions`` healing actions per pipeline within ``window_s`` (the in-run retries
    and tier switches are bounded by their own policies and do not count), at least
    ``cooldown_s`` apart, and the wait between restarts.
    """

    playbook: Sequence[Rule] = DEFAULT_PLAYBOOK
    max_actions: int = 6
    window_s: float = 3600.0
    cooldown_s: float = 1.0
    backoff: Retry = RESTART_BACKOFF

    def __post_init__(self) -> None:
        if self.max_actions < 0 or self.window_s <= 0 or self.cooldown_s < 0:
            raise ConfigError(
                f"healing max_actions={self.max_actions}, window_s={self.window_s}, "
                f"cooldown_s={self.cooldown_s} are out of range; use max_actions >= 0, "
                "window_s > 0 and cooldown_s >= 0"
            )


DEFAULT_HEALING = Healing()

#: Ledger rows that are not healing actions of the supervisor's budget.
_NOT_BUDGETED = IN_RUN | {Action.ESCALATE, "verify"}


@dataclasses.dataclass(slots=True)
class _Healer:
    """One ``run_healing`` call's healing state: what it acted on, what it quarantines."""

    ledger: Ledger
    healing: Healing
    notify: Callable[[Alert], None]
    clock: Clock
    draw: Callable[[], float]
    acted: dict[str, Incident] = dataclasses.field(default_factory=dict)
    quarantine: dict[str, BaseException] = dataclasses.field(default_factory=dict)


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
    healer = _Healer(Ledger(store), healing, _fan_out(list(notifiers)), clock, draw)
    hooks = list(hooks)
    while True:
        try:
            result = pipeline.run(
                hooks=hooks, state=store, clock=clock, quarantine=healer.quarantine
            )
        except (MendflowError, MemoryError) as exc:
            pipeline = _heal_once(pipeline, exc, healer)
            continue
        _verify(pipeline.name, result, healer)
        return result


def _verify(pipeline: str, result: RunResult, healer: _Healer) -> None:
    """The run went through: heal what this call acted on and what was escalated before."""
    ledger, now = healer.ledger, healer.clock.now()
    earlier = [i for i in ledger.unhealed(pipeline) if i.escalated]
    for incident in [*healer.acted.values(), *earlier]:
        ledger.act(incident.incident_id, action="verify", outcome="succeeded",
                   detail=f"run {result.run_id} succeeded", at=now)
        ledger.heal(incident.incident_id, at=now)
        if incident.escalated:  # paged in an earlier call; escalating here always raises
            healer.notify(_alert("resolved", incident, diagnosis=None, actions=()))


def _heal_once(pipeline: Pipeline, exc: BaseException, healer: _Healer) -> Pipeline:
    """Choose and carry out one action; raise ``exc`` when the choice is to escalate."""
    ledger, healing, clock = healer.ledger, healer.healing, healer.clock
    diagnosis = diagnose(exc)
    now = clock.now()
    incident = _incident_of(ledger, pipeline.name, diagnosis, now)
    healer.acted[incident.incident_id] = incident
    spent, latest = ledger.spent(
        pipeline.name, since=now - healing.window_s, excluding=_NOT_BUDGETED
    )
    size = getattr(pipeline.source, "batch_size", None)
    situation = Situation(
        diagnosis, ledger.actions_taken(incident.incident_id, excluding=_NOT_BUDGETED), size,
        stage=getattr(exc, "stage", ""), batch_id=getattr(exc, "batch_id", ""),
        breaker_state="open" if isinstance(exc, DependencyDown) else "",
    )
    action = decide(healing.playbook, situation)
    if spent >= healing.max_actions:
        action = Action.ESCALATE
    act = functools.partial(ledger.act, incident.incident_id, action=str(action), at=now)
    if action is Action.ESCALATE:
        _escalate(incident, diagnosis, exc, healer, spent)
    if action is Action.SHRINK_BATCH and size:
        act(outcome="tried", detail=f"batch_size {size} -> {max(1_000, size // 2)}")
        return _with_batch_size(pipeline, max(1_000, size // 2))
    if action is Action.QUARANTINE:
        healer.quarantine[situation.batch_id] = exc
        act(outcome="tried", detail=f"batch {situation.batch_id} goes to the dead letters")
        return pipeline
    delay = getattr(exc, "retry_after_s", None)
    if delay is None:
        delay = healing.backoff.backoff_s(situation.actions_taken + 1, healer.draw)
    if latest is not None:
        delay = max(delay, latest + healing.cooldown_s - now)
    what = {
        Action.ROLLBACK: f"batch {situation.batch_id} was rolled back, nothing of it committed; "
        "restarting from the checkpoint",
        Action.WAIT_FOR_DEPENDENCY: f"waiting for {diagnosis.dependency or 'the dependency'}",
    }.get(action, "restarting from the checkpoint")
    act(outcome="tried", detail=f"{diagnosis.error_type}: {what} in {delay:.2f}s")
    if delay > 0:
        clock.sleep(delay)
    return pipeline


def _incident_of(ledger: Ledger, pipeline: str, diagnosis: Diagnosis, now: float) -> Incident:
    """The unhealed incident of the failing dependency; else the pipeline's escalated incident
    of the same class (a human is on it already); else a new one."""
    found = ledger.current(pipeline, dependency=diagnosis.dependency)
    if found is None:
        same = str(diagnosis.failure_class)
        paged = (i for i in ledger.unhealed(pipeline) if i.escalated and i.failure_class == same)
        found = next(paged, None)
    return found or ledger.open(pipeline=pipeline, run_id="", diagnosis=diagnosis, at=now)


def _escalate(
    incident: Incident, diagnosis: Diagnosis, exc: BaseException, healer: _Healer, spent: int
) -> NoReturn:
    """Page once per incident (the ledger says whether this is the first time), then raise."""
    ledger, now = healer.ledger, healer.clock.now()
    first = ledger.escalate(incident.incident_id)
    budget = healer.healing
    why = str(exc)
    if spent >= budget.max_actions:
        why = (f"healing budget spent ({spent} actions within {budget.window_s:g}s); "
               f"last error: {exc}")
    ledger.act(incident.incident_id, action=str(Action.ESCALATE),
               outcome="paged" if first else "already_paged", detail=why, at=now)
    if first:
        tried = tuple(str(a["action"]) for a in _actions(ledger, incident))
        healer.notify(_alert("escalated", incident, diagnosis=diagnosis, actions=tried))
    raise exc


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
