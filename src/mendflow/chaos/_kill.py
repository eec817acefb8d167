"""Killing the process: at a chosen event (``KillAt``), or at a seeded one (``ProcessKiller``)."""

from __future__ import annotations

import os
import signal

from mendflow.chaos.journal import Journal
from mendflow.chaos.plan import FaultPlan
from mendflow.events import Event

__all__ = ["KillAt", "ProcessKiller"]


class KillAt:
    """A hook that SIGKILLs its own process at the ``nth`` event of ``kind`` (1-based).

    ``batch.staged`` fires inside the open load transaction, so a kill there tests the commit.
    """

    def __init__(self, kind: str, nth: int = 1) -> None:
        self.kind = kind
        self.nth = nth
        self._seen = 0

    def __call__(self, event: Event) -> None:
        if event.kind != self.kind:
            return
        self._seen += 1
        if self._seen == self.nth:
            os.kill(os.getpid(), signal.SIGKILL)


class ProcessKiller:
    """A hook that SIGKILLs its process at each ``kill`` fault of ``plan``: at the ``at``-th
    event of the fault's ``event`` kind, counted across restarts in the journal. The fault is
    journaled before the kill, so the restarted process does not die at it again."""

    def __init__(self, plan: FaultPlan, *, journal: Journal | None = None) -> None:
        self.faults = plan.of(("kill",))
        self.journal = journal or Journal()

    def __call__(self, event: Event) -> None:
        for fault in self.faults:
            if event.kind != fault.event or self.journal.fired(fault.id):
                continue
            if self.journal.count(f"event:{fault.event}") >= fault.at:
                self.journal.fire(fault.id, fault.kind)
                os.kill(os.getpid(), signal.SIGKILL)
