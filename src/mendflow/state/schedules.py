"""Per pipeline: when the scheduler runs it next, whether it is paused, its maintenance windows.

``due`` advances a pipeline's ``next_at`` with a compare-and-set, so when several schedulers
share a store each due time yields one job. Maintenance windows come from the pipeline's YAML
(passed in) and from the API (stored in ``mf_maintenance``).

The first time a schedule is seen for a pipeline, it is due at once when the pipeline never
ran, or when a due time passed since its last run started (a service started after a long
stop catches up with one run, not one per missed time); else at its next due time. Due times
missed while the scheduler was stopped or paused yield one run, then the schedule goes on from
now. A schedule edited to come sooner than the stored ``next_at`` takes effect at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.exceptions import ConfigError
from mendflow.schedule import Schedule, Window, covered
from mendflow.state.schema import maintenance, runs, schedules
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

    def as_dict(self) -> dict[str, Any]:
        """The window as JSON-ready values."""
        return {name: getattr(self, name) for name in self.__slots__}


class Schedules:
    """Schedule state and maintenance windows in a state store."""

    def __init__(self, store: StateStore, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = store
        self.clock = clock

    def due(self, pipeline: str, schedule: Schedule, *, now: float) -> bool:
        """True once per due time of ``schedule`` at or before ``now`` (not while paused); the
        first call for a pipeline schedules its first run at ``schedule.next_after(now)``...
        unless the pipeline has never run, which is due at once (see the module docstring)."""
        state = self._row(pipeline)
        if state is None:
            return self._first(pipeline, schedule, now)
        if state.paused:
            return False
        upcoming = schedule.next_after(now)
        if state.next_at is None or state.next_at > upcoming:  # new, or the schedule changed
            first = self._first_due(pipeline, schedule, now)
            return self._advance(pipeline, state.next_at, first, now, upcoming)
        if state.next_at > now:
            return False
        return self._advance(pipeline, state.next_at, state.next_at, now, upcoming)

    def state(self, pipeline: str) -> ScheduleState:
        """The pipeline's row (a default one when it has none)."""
        return self._row(pipeline) or ScheduleState(pipeline, None, False, "")

    def pause(self, pipeline: str, *, reason: str) -> bool:
        """Pause the pipeline's schedule (and alert-driven runs); False if it was paused."""
        now = self.clock.now()
        if self._insert(pipeline, next_at=None, paused=True, paused_reason=reason, now=now):
            return True
        with self.store.engine.begin() as con:
            done = con.execute(
                schedules.update()
                .where(schedules.c.pipeline == pipeline, schedules.c.paused.is_(False))
                .values(paused=True, paused_reason=reason, updated_at=now)
            )
        return done.rowcount == 1

    def resume(self, pipeline: str) -> bool:
        """Resume it; False if it was not paused."""
        with self.store.engine.begin() as con:
            done = con.execute(
                schedules.update()
                .where(schedules.c.pipeline == pipeline, schedules.c.paused.is_(True))
                .values(paused=False, paused_reason="", updated_at=self.clock.now())
            )
        return done.rowcount == 1

    def add_window(self, pipeline: str, *, starts_at: float, ends_at: float, reason: str
                   ) -> StoredWindow:
        """Store a maintenance window for ``pipeline``; ``ConfigError`` unless it ends after
        it starts."""
        if not ends_at > starts_at:
            raise ConfigError(
                f"maintenance window ends ({ends_at}) before it starts ({starts_at}); set "
                "ends_at after starts_at (epoch seconds)."
            )
        with self.store.engine.begin() as con:
            done = con.execute(maintenance.insert().values(
                pipeline=pipeline, starts_at=starts_at, ends_at=ends_at, reason=reason,
                created_at=self.clock.now(),
            ))
            key = done.inserted_primary_key
        assert key is not None
        return StoredWindow(int(key[0]), pipeline, starts_at, ends_at, reason)

    def windows(self, pipeline: str | None = None, *, ending_after: float | None = None
                ) -> list[StoredWindow]:
        """Stored windows (of ``pipeline``; those ending after ``ending_after``), soonest
        first."""
        query = sa.select(maintenance).order_by(maintenance.c.starts_at, maintenance.c.id)
        if pipeline is not None:
            query = query.where(maintenance.c.pipeline == pipeline)
        if ending_after is not None:
            query = query.where(maintenance.c.ends_at > ending_after)
        with self.store.engine.connect() as con:
            return [
                StoredWindow(int(r.id), r.pipeline, r.starts_at, r.ends_at, r.reason)
                for r in con.execute(query)
            ]

    def in_maintenance(self, pipeline: str, at: float, static: Sequence[Window] = ()) -> bool:
        """True when ``at`` falls in one of the pipeline's windows (stored, or ``static``); a
        window covers its start and not its end."""
        if covered(static, at):
            return True
        query = sa.select(maintenance.c.id).where(
            maintenance.c.pipeline == pipeline, maintenance.c.starts_at <= at,
            maintenance.c.ends_at > at,
        ).limit(1)
        with self.store.engine.connect() as con:
            return con.execute(query).first() is not None

    # -- internals -----------------------------------------------------------------------------

    def _row(self, pipeline: str) -> ScheduleState | None:
        with self.store.engine.connect() as con:
            row = con.execute(
                sa.select(schedules).where(schedules.c.pipeline == pipeline)).first()
        if row is None:
            return None
        return ScheduleState(row.pipeline, row.next_at, bool(row.paused), row.paused_reason)

    def _first(self, pipeline: str, schedule: Schedule, now: float) -> bool:
        """The first sight of the pipeline's schedule: store when it is next due (racing
        schedulers: one inserts, the others go through the compare-and-set)."""
        first = self._first_due(pipeline, schedule, now)
        if first <= now:
            if self._insert(pipeline, next_at=schedule.next_after(now), now=now):
                return True
        elif self._insert(pipeline, next_at=first, now=now):
            return False
        return self.due(pipeline, schedule, now=now)

    def _first_due(self, pipeline: str, schedule: Schedule, now: float) -> float:
        """When a pipeline not scheduled yet is due: now if it never ran, else the first due
        time after its last run started (now, if that has passed)."""
        with self.store.engine.connect() as con:
            last = con.execute(
                sa.select(sa.func.max(runs.c.started_at)).where(runs.c.pipeline == pipeline)
            ).scalar()
        if last is None:
            return now
        return min(schedule.next_after(float(last)), schedule.next_after(now))

    def _advance(
        self, pipeline: str, seen: float | None, due_at: float, now: float, upcoming: float
    ) -> bool:
        """Compare-and-set ``next_at`` from ``seen``: past ``now`` when ``due_at`` has come
        (True for the one scheduler that moves it), else to ``due_at``."""
        fired = due_at <= now
        where = [schedules.c.pipeline == pipeline, schedules.c.paused.is_(False)]
        where.append(schedules.c.next_at.is_(None) if seen is None else schedules.c.next_at == seen)
        with self.store.engine.begin() as con:
            done = con.execute(schedules.update().where(*where).values(
                next_at=upcoming if fired else due_at, updated_at=now))
        return fired and done.rowcount == 1

    def _insert(self, pipeline: str, *, next_at: float | None, now: float, paused: bool = False,
                paused_reason: str = "") -> bool:
        """Insert the pipeline's row; False when it exists already."""
        try:
            with self.store.engine.begin() as con:
                con.execute(schedules.insert().values(
                    pipeline=pipeline, next_at=next_at, paused=paused,
                    paused_reason=paused_reason, updated_at=now,
                ))
        except sa.exc.IntegrityError:
            return False
        return True


__all__: Sequence[str] = ("ScheduleState", "Schedules", "StoredWindow")
