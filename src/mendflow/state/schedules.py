"""Per pipeline: when the scheduler runs it next, whether it is paused, its maintenance windows.

SKELETON (issue 6): the interface is fixed here; helper A implements it.

``due`` advances a pipeline's ``next_at`` with a compare-and-set, so when several schedulers
share a store each due time yields one job. Maintenance windows come from the pipeline's YAML
(passed in) and from the API (stored in ``mf_maintenance``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.schedule import Schedule, Window
from mendflow.state.store import StateStore


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """One row of ``mf_schedules``."""

    pipeline: str
    next_at: float | None
    paused: bool
    paused_reason: str


@dataclass(frozen=True, slots=True)
class StoredWindow:
    """A maintenance window set through the API."""

    id: int
    pipeline: str
    starts_at: float
    ends_at: float
    reason: str


class Schedules:
    """Schedule state and maintenance windows in a state store."""

    def __init__(self, store: StateStore, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = store
        self.clock = clock

    def due(self, pipeline: str, schedule: Schedule, *, now: float) -> bool:
        """True once per due time of ``schedule`` at or before ``now`` (not while paused); the
        first call for a pipeline schedules its first run at ``schedule.next_after(now)``...
        unless the pipeline has never run, which is due at once."""
        raise NotImplementedError

    def state(self, pipeline: str) -> ScheduleState:
        """The pipeline's row (a default one when it has none)."""
        raise NotImplementedError

    def pause(self, pipeline: str, *, reason: str) -> bool:
        """Pause the pipeline's schedule (and alert-driven runs); False if it was paused."""
        raise NotImplementedError

    def resume(self, pipeline: str) -> bool:
        """Resume it; False if it was not paused."""
        raise NotImplementedError

    def add_window(self, pipeline: str, *, starts_at: float, ends_at: float, reason: str
                   ) -> StoredWindow:
        """Store a maintenance window for ``pipeline``."""
        raise NotImplementedError

    def windows(self, pipeline: str | None = None) -> list[StoredWindow]:
        """Stored windows (of ``pipeline``), soonest first."""
        raise NotImplementedError

    def in_maintenance(self, pipeline: str, at: float, static: Sequence[Window] = ()) -> bool:
        """True when ``at`` falls in one of the pipeline's windows (stored, or ``static``)."""
        raise NotImplementedError


__all__: Sequence[str] = ("ScheduleState", "Schedules", "StoredWindow")
