"""Diagnose failures, choose healing actions, keep the ledger, escalate when healing is spent."""

from mendflow.remediation.diagnosis import Diagnosis, FailureClass, diagnose
from mendflow.remediation.ledger import Ledger
from mendflow.remediation.playbook import DEFAULT_PLAYBOOK, Action, Situation, decide

__all__ = [
    "DEFAULT_PLAYBOOK",
    "Action",
    "Diagnosis",
    "FailureClass",
    "Ledger",
    "Situation",
    "decide",
    "diagnose",
]
