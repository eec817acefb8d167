"""The scheduler: queue each pipeline's runs when they are due, and reap jobs gone silent.

    scheduler = Scheduler(store, catalog)
    scheduler.tick()                      # -> Tick(enqueued=(...), reaped=(...))
    scheduler.run_forever(stop)           # a tick a second until ``stop`` is set

Each tick, for every pipeline of the catalog with a ``schedule``: skip it while paused or inside
a maintenance window (its YAML windows and those set through the API); else when it is due
(``Schedules.due``, a compare-and-set, so several schedulers sharing a store queue one job per
due time) queue a job with reason ``schedule``. A due time that falls inside a window is not
consumed: the run is queued when the window ends. Then ``JobQueue.reap`` marks running jobs
whose heartbeat is older than ``lease_timeout_s`` lost and queues their relaunch.

The scheduler only queues; workers (``server/worker.py``) run the jobs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.server.catalog import Catalog, Entry
from mendflow.state.jobs import Job, JobQueue
from mendflow.state.schedules import Schedules
from mendflow.state.store import StateStore

log = logging.getLogger("mendflow.scheduler")
#: How long a running job may stay silent before it is reaped (the issue's default).
LEASE_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Tick:
    """What one tick did: the jobs it queued and the jobs it found lost."""

    enqueued: tuple[Job, ...] = ()
    reaped: tuple[Job, ...] = ()


class Scheduler:
    """Queues scheduled runs and reaps silent jobs (see the module docstring).

    ``control_or_store`` is the state store, or anything holding one as ``.store`` (such as
    ``server.control.Control``)."""

    def __init__(
        self,
        control_or_store: object,
        catalog: Catalog,
        clock: Clock = SYSTEM_CLOCK,
        *,
        lease_timeout_s: float = LEASE_TIMEOUT_S,
    ) -> None:
        store = control_or_store if isinstance(control_or_store, StateStore) else getattr(
            control_or_store, "store", None)
        if not isinstance(store, StateStore):
            raise TypeError("Scheduler needs a StateStore, or an object with one as .store")
        if lease_timeout_s <= 0:
            raise ValueError(f"lease_timeout_s must be > 0 seconds, not {lease_timeout_s!r}")
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.lease_timeout_s = lease_timeout_s
        self.jobs = JobQueue(store, clock=clock)
        self.schedules = Schedules(store, clock=clock)

    def tick(self, now: float | None = None) -> Tick:
        """Queue what is due at ``now`` (default: the clock's now) and reap silent jobs; one
        pipeline's failure is logged and does not stop the others."""
        at = self.clock.now() if now is None else now
        enqueued: list[Job] = []
        for entry in self.catalog.entries():
            try:
                job = self._consider(entry, at)
            except Exception:
                log.exception("could not schedule pipeline %s", entry.name)
                continue
            if job is not None:
                enqueued.append(job)
        try:
            reaped = self.jobs.reap(timeout_s=self.lease_timeout_s)
        except Exception:
            log.exception("could not reap silent jobs")
            reaped = []
        for job in reaped:
            log.warning("job %s of %s lost: %s", job.job_id, job.pipeline, job.error)
        return Tick(tuple(enqueued), tuple(reaped))

    def run_forever(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        """Tick every ``interval_s`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # never let one bad tick end the scheduler
                log.exception("scheduler tick failed")
            stop.wait(interval_s)

    def _consider(self, entry: Entry, at: float) -> Job | None:
        if entry.schedule is None:
            return None
        if self.schedules.state(entry.name).paused:
            return None
        if self.schedules.in_maintenance(entry.name, at, entry.maintenance):
            return None
        if not self.schedules.due(entry.name, entry.schedule, now=at):
            return None
        job = self.jobs.enqueue(entry.name, reason="schedule")
        if job is not None:
            log.info("queued a scheduled run of %s (%s): job %s", entry.name,
                     entry.schedule.describe(), job.job_id)
        return job


__all__: Sequence[str] = ("LEASE_TIMEOUT_S", "Scheduler", "Tick")
