"""Which healing action meets a diagnosed failure: an ordered tuple of plain rules.

A rule looks at the situation (the diagnosis, how many actions the incident has had, the stage
and batch that failed, the dependency's breaker state) and names an action, or passes (None) to
the next rule. The first
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

    RETRY = "retry"
    CIRCUIT_BREAKER = "circuit_breaker"
    PROBE = "probe"
    WAIT_FOR_DEPENDENCY = "wait_for_dependency"
    SWITCH_TIER = "switch_tier"
    SHRINK_BATCH = "shrink_batch"
    QUARANTINE = "quarantine"
    ROLLBACK = "rollback"
    RESTART_FROM_CHECKPOINT = "restart_from_checkpoint"
    ESCALATE = "escalate"
    #: The service's actions: a lost run relaunched from its checkpoint by another worker; a
    #: run asked for by an alert; a pipeline paused or resumed; a breaker reset to closed.
    RELAUNCH = "relaunch"
    RERUN = "rerun"
    PAUSE = "pause"
    RESUME = "resume"
    RESET_BREAKER = "reset_breaker"


#: Actions taken inside a run, by the call that failed or by the source (retries, breakers,
#: fallback tiers); the ledger records them, and the supervisor's budget does not count them.
IN_RUN: frozenset[str] = frozenset(
    {Action.RETRY, Action.CIRCUIT_BREAKER, Action.PROBE, Action.SWITCH_TIER}
)


@dataclass(frozen=True, slots=True)
class Situation:
    """What a rule may look at."""

    diagnosis: Diagnosis
    actions_taken: int
    batch_size: int | None = None
    #: "prepare" or "write" when the failure came from one batch, with that batch's id.
    stage: str = ""
    batch_id: str = ""
    #: The failing dependency's circuit breaker state ("closed", "open", "half_open"), if known.
    breaker_state: str = ""


Rule = Callable[[Situation], Action | None]


def final_failures_escalate(s: Situation) -> Action | None:
    """Permanent, configuration and unknown failures go to a human at once."""
    return None if s.diagnosis.healable else Action.ESCALATE


def quarantine_bad_batches(s: Situation) -> Action | None:
    """A batch the destination refuses as bad data: set it aside whole, load the rest."""
    if s.diagnosis.failure_class is not FailureClass.BAD_DATA:
        return None
    return Action.QUARANTINE if s.batch_id else Action.ESCALATE


def drift_escalates(s: Situation) -> Action | None:
    """Data that does not fit the schema will not fit on a rerun either."""
    return Action.ESCALATE if s.diagnosis.failure_class is FailureClass.SCHEMA_DRIFT else None


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


def rollback_failed_writes(s: Situation) -> Action | None:
    """A write that failed part-way: its transaction is rolled back, then the run restarts."""
    transient = s.diagnosis.failure_class is FailureClass.TRANSIENT
    return Action.ROLLBACK if transient and s.stage == "write" else None


def restart_when_transient(s: Situation) -> Action | None:
    """A blip that outlasted the call's own retries: restart the run from its checkpoint."""
    return (
        Action.RESTART_FROM_CHECKPOINT
        if s.diagnosis.failure_class is FailureClass.TRANSIENT
        else None
    )


DEFAULT_PLAYBOOK: tuple[Rule, ...] = (
    quarantine_bad_batches,
    final_failures_escalate,
    drift_escalates,
    shrink_when_exhausted,
    wait_when_down,
    rollback_failed_writes,
    restart_when_transient,
)


def decide(playbook: Sequence[Rule], situation: Situation) -> Action:
    """The first action a rule names; escalate when none does."""
    for rule in playbook:
        action = rule(situation)
        if action is not None:
            return action
    return Action.ESCALATE
