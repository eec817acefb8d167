"""Which healing action meets a diagnosed failure: an ordered tuple of plain rules.

A rule looks at the situation (the diagnosis, how many actions the incident has had, the
dependency's breaker state) and names an action, or passes (None) to the next rule. The first
action named wins; a playbook that names none escalates. Override per pipeline by passing your
own tuple, e.g. ``(my_rule, *DEFAULT_PLAYBOOK)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from mendflow.remediation.diagnosis import Diagnosis, FailureClass


class Action(StrEnum):
    """The healing actions."""

    RESTART_FROM_CHECKPOINT = "restart_from_checkpoint"
    WAIT_FOR_DEPENDENCY = "wait_for_dependency"
    SHRINK_BATCH = "shrink_batch"
    ESCALATE = "escalate"


@dataclass(frozen=True, slots=True)
class Situation:
    """What a rule may look at."""

    diagnosis: Diagnosis
    actions_taken: int
    batch_size: int | None = None


Rule = Callable[[Situation], Action | None]


def final_failures_escalate(s: Situation) -> Action | None:
    """Permanent, configuration and unknown failures go to a human at once."""
    return None if s.diagnosis.healable else Action.ESCALATE


def bad_data_and_drift_escalate(s: Situation) -> Action | None:
    """Data that cannot load as it is will not load on a rerun either."""
    kinds = {FailureClass.BAD_DATA, FailureClass.SCHEMA_DRIFT}
    return Action.ESCALATE if s.diagnosis.failure_class in kinds else None


def shrink_when_exhausted(s: Situation) -> Action | None:
    """Out of memory: halve the batch, down to 1,000 rows."""
    if s.diagnosis.failure_class is not FailureClass.RESOURCE_EXHAUSTED:
        return None
    can_shrink = s.batch_size is not None and s.batch_size > 1_000
    return Action.SHRINK_BATCH if can_shrink else Action.ESCALATE


def wait_when_down(s: Situation) -> Action | None:
    """An open breaker or a rate limit: wait as long as told, then resume."""
    kinds = {FailureClass.DEPENDENCY_DOWN, FailureClass.RATE_LIMITED}
    return Action.WAIT_FOR_DEPENDENCY if s.diagnosis.failure_class in kinds else None


def restart_when_transient(s: Situation) -> Action | None:
    """A blip that outlasted the call's own retries: restart the run from its checkpoint."""
    return (
        Action.RESTART_FROM_CHECKPOINT
        if s.diagnosis.failure_class is FailureClass.TRANSIENT
        else None
    )


DEFAULT_PLAYBOOK: tuple[Rule, ...] = (
    final_failures_escalate,
    bad_data_and_drift_escalate,
    shrink_when_exhausted,
    wait_when_down,
    restart_when_transient,
)


def decide(playbook: Sequence[Rule], situation: Situation) -> Action:
    """The first action a rule names; escalate when none does."""
    for rule in playbook:
        action = rule(situation)
        if action is not None:
            return action
    return Action.ESCALATE
