"""The run queue of the service, and the lease a running job holds on its pipeline.

    queue = JobQueue(store)
    queue.enqueue("orders", reason="schedule")      # -> Job, or None if one is queued already
    job = queue.claim("worker-1")                   # the oldest queued job whose pipeline is free
    queue.heartbeat(job.job_id, "worker-1")         # False: the lease was lost (reaped)
    queue.finish(job.job_id, "worker-1", status="succeeded", run_id=...)
    queue.reap(timeout_s=30)                        # running jobs silent too long: lost, relaunched

A job ``running`` is its pipeline's lease: a partial unique index allows one running job per
pipeline, so two workers never run one pipeline at once, whichever machines they are on.
Claiming takes the oldest claimable job with ``SELECT ... FOR UPDATE SKIP LOCKED`` on
PostgreSQL and under SQLite's single-writer lock (``BEGIN IMMEDIATE``); should two claims still
race for one pipeline, the index refuses the second, which moves on to the next job.

Every change of a job's state is a compare-and-set on what the writer believes it to be:
``heartbeat`` and ``finish`` only touch a job still ``running`` by that worker, and ``reap`` only
a job whose heartbeat has not moved since it was read, so each lost job is reaped once however
many reapers run, and a worker whose job was reaped learns it at its next heartbeat.

A reaped job opens a ``worker_lost`` incident in the ledger, records its ``relaunch`` action and
queues a relaunch carrying the incident (or, when a run of the pipeline is queued already, hands
the incident to that job). The worker that runs it records ``verify`` and heals the incident.
The steps after the compare-and-set are separate transactions: a reaper that dies between them
leaves the job lost without a relaunch, and the pipeline's next run resumes from its checkpoint.

Times come from the injected clock of each process: the machines sharing a store must agree on
the time (NTP) to well within the lease timeout, or a live job may be taken for a silent one.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from mendflow._redact import redact
from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.exceptions import PipelineBusy
from mendflow.state._connect import write_transaction
from mendflow.state.schema import jobs, runs
from mendflow.state.store import StateStore

QUEUED, RUNNING, SUCCEEDED, FAILED, LOST, CANCELLED = (
    "queued", "running", "succeeded", "failed", "lost", "cancelled")
#: The statuses ``finish`` may set.
ENDINGS = frozenset({SUCCEEDED, FAILED, CANCELLED})
#: How many claimable jobs one ``claim`` tries when races for a pipeline's lease refuse it.
_CLAIM_TRIES = 16


@dataclass(frozen=True, slots=True)
class Job:
    """One row of ``mf_jobs``."""

    job_id: str
    pipeline: str
    kind: str
    reason: str
    status: str
    requested_at: float
    worker: str | None = None
    run_id: str | None = None
    claimed_at: float | None = None
    heartbeat_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    incident_id: str | None = None
    attempt: int = 1

    def as_dict(self) -> dict[str, Any]:
        """The job as JSON-ready values."""
        return {name: getattr(self, name) for name in self.__slots__}


class JobQueue:
    """Jobs and leases in a state store."""

    def __init__(self, store: StateStore, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = store
        self.clock = clock

    def enqueue(
        self, pipeline: str, *, reason: str, incident_id: str | None = None, attempt: int = 1
    ) -> Job | None:
        """Queue a run of ``pipeline``; None when one is queued already (not yet claimed)."""
        job = Job(_new_id(), pipeline, "run", reason, QUEUED, self.clock.now(),
                  incident_id=incident_id, attempt=attempt)
        with self._writing(pipeline) as con:
            if con.execute(_queued_of(pipeline)).first() is not None:
                return None
            con.execute(jobs.insert().values(**job.as_dict()))
        return job

    def enqueue_or_attach(
        self, pipeline: str, *, reason: str, incident_id: str, attempt: int = 1
    ) -> Job:
        """Queue a run for ``incident_id``; when one is queued already, hand the incident to
        it instead (if it carries none yet). Return the queued job that will run."""
        with self._writing(pipeline) as con:
            row = con.execute(sa.select(jobs).where(
                jobs.c.pipeline == pipeline, jobs.c.status == QUEUED, jobs.c.kind == "run"
            ).limit(1)).first()
            if row is not None:
                job = _job(row._mapping)
                if job.incident_id is not None:
                    return job
                done = con.execute(  # unless a worker claims it meanwhile
                    jobs.update().where(jobs.c.job_id == job.job_id, jobs.c.status == QUEUED)
                    .values(incident_id=incident_id, attempt=attempt))
                if done.rowcount == 1:
                    return _replace(job, incident_id=incident_id, attempt=attempt)
            job = Job(_new_id(), pipeline, "run", reason, QUEUED, self.clock.now(),
                      incident_id=incident_id, attempt=attempt)
            con.execute(jobs.insert().values(**job.as_dict()))
        return job

    def claim(self, worker: str, *, pipelines: Collection[str] | None = None) -> Job | None:
        """Take the oldest queued job (of ``pipelines``, if given) whose pipeline no worker is
        running, mark it running by ``worker``; None when there is none."""
        if pipelines is not None and not pipelines:
            return None
        refused: set[str] = set()
        for _ in range(_CLAIM_TRIES):
            try:
                return self._claim_once(worker, pipelines, refused)
            except _Refused as race:  # another worker took the pipeline's lease meanwhile
                refused.add(race.pipeline)
        return None

    def heartbeat(self, job_id: str, worker: str, *, run_id: str | None = None) -> bool:
        """Say ``worker`` is still running ``job_id`` (recording ``run_id`` once known); False
        when the job is no longer this worker's (it was reaped)."""
        values: dict[str, Any] = {"heartbeat_at": self.clock.now()}
        if run_id is not None:
            values["run_id"] = run_id
        with self.store.engine.begin() as con:
            done = con.execute(jobs.update().where(*_held(job_id, worker)).values(**values))
        return done.rowcount == 1

    def finish(
        self, job_id: str, worker: str, *, status: str, run_id: str | None = None,
        error: str | None = None,
    ) -> bool:
        """End a running job (``succeeded`` or ``failed``), releasing the lease; False when the
        job was no longer this worker's."""
        if status not in ENDINGS:
            raise ValueError(f"a job ends {sorted(ENDINGS)}, not {status!r}")
        now = self.clock.now()
        values: dict[str, Any] = {
            "status": status, "finished_at": now, "heartbeat_at": now,
            "error": None if error is None else redact(error),
        }
        if run_id is not None:
            values["run_id"] = run_id
        with self.store.engine.begin() as con:
            done = con.execute(jobs.update().where(*_held(job_id, worker)).values(**values))
        return done.rowcount == 1

    def reap(self, *, timeout_s: float) -> list[Job]:
        """Mark running jobs whose heartbeat is older than ``timeout_s`` lost, open a
        ``worker_lost`` incident for each in the ledger and queue a relaunch; return the lost
        jobs (each reaped once, whatever the number of reapers).

        Only jobs of kind ``run`` are relaunched; a lost ``replay`` (or other held kind) just
        gives its lease back."""
        now = self.clock.now()
        query = sa.select(jobs).where(
            jobs.c.status == RUNNING, jobs.c.heartbeat_at < now - timeout_s
        ).order_by(jobs.c.heartbeat_at)
        with self.store.engine.connect() as con:
            silent = [_job(row._mapping) for row in con.execute(query)]
        lost = [job for job in silent if self._mark_lost(job, now)]
        for job in lost:
            if job.kind == "run":
                self._relaunch(job, now)
        return [self.get(job.job_id) or job for job in lost]

    @contextmanager
    def hold(
        self, pipeline: str, worker: str, *, kind: str = "replay", heartbeat_s: float = 5.0
    ) -> Iterator[Job]:
        """Hold ``pipeline``'s lease for the block (a running job of ``kind``), e.g. to replay
        its dead letters; ``PipelineBusy`` when a worker runs it now.

        A thread heartbeats every ``heartbeat_s`` seconds so a long block is not reaped; the
        job ends ``succeeded``, or ``failed`` with the error when the block raises."""
        now = self.clock.now()
        job = Job(_new_id(), pipeline, kind, "manual", RUNNING, now, worker=worker,
                  claimed_at=now, heartbeat_at=now)
        try:
            with self.store.engine.begin() as con:
                con.execute(jobs.insert().values(**job.as_dict()))
        except sa.exc.IntegrityError:
            raise PipelineBusy(
                f"pipeline {pipeline!r} is being run by a worker right now "
                f"({self._holder(pipeline)}); try again when that job ends",
                dependency=f"pipeline:{pipeline}",
            ) from None
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(job, stop, heartbeat_s), daemon=True,
                                name=f"mendflow-hold-{pipeline}")
        beat.start()
        try:
            yield job
        except BaseException as exc:
            stop.set()
            self.finish(job.job_id, worker, status=FAILED, error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            stop.set()
            beat.join()
        self.finish(job.job_id, worker, status=SUCCEEDED)

    def jobs(
        self, *, pipeline: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[Job]:
        """Jobs, newest first."""
        query = sa.select(jobs).order_by(jobs.c.requested_at.desc(), jobs.c.job_id).limit(limit)
        if pipeline is not None:
            query = query.where(jobs.c.pipeline == pipeline)
        if status is not None:
            query = query.where(jobs.c.status == status)
        with self.store.engine.connect() as con:
            return [_job(row._mapping) for row in con.execute(query)]

    def get(self, job_id: str) -> Job | None:
        """One job by id."""
        with self.store.engine.connect() as con:
            row = con.execute(sa.select(jobs).where(jobs.c.job_id == job_id)).first()
        return None if row is None else _job(row._mapping)

    def running(self, pipeline: str) -> Job | None:
        """The job holding ``pipeline``'s lease now, if any."""
        found = self.jobs(pipeline=pipeline, status=RUNNING, limit=1)
        return found[0] if found else None

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job; False when it is not queued (claimed already, or unknown)."""
        with self.store.engine.begin() as con:
            done = con.execute(
                jobs.update().where(jobs.c.job_id == job_id, jobs.c.status == QUEUED)
                .values(status=CANCELLED, finished_at=self.clock.now())
            )
        return done.rowcount == 1

    # -- internals -----------------------------------------------------------------------------

    def _claim_once(
        self, worker: str, pipelines: Collection[str] | None, refused: set[str]
    ) -> Job | None:
        held = jobs.alias("held")
        busy = sa.select(held.c.pipeline).where(held.c.status == RUNNING)
        query = (
            sa.select(jobs)
            .where(jobs.c.status == QUEUED, jobs.c.pipeline.not_in(busy))
            .order_by(jobs.c.requested_at, jobs.c.job_id)
            .limit(1)
        )
        if pipelines is not None:
            query = query.where(jobs.c.pipeline.in_(list(pipelines)))
        if refused:
            query = query.where(jobs.c.pipeline.not_in(sorted(refused)))
        if self.store.engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=jobs)
        now, picked = self.clock.now(), ""
        try:
            with self._writing() as con:
                row = con.execute(query).first()
                if row is None:
                    return None
                job = _job(row._mapping)
                picked = job.pipeline
                done = con.execute(
                    jobs.update().where(jobs.c.job_id == job.job_id, jobs.c.status == QUEUED)
                    .values(status=RUNNING, worker=worker, claimed_at=now, heartbeat_at=now)
                )
        except sa.exc.IntegrityError as exc:  # the unique index: the pipeline got a lease
            raise _Refused(picked) from exc
        if done.rowcount != 1:
            raise _Refused(job.pipeline)
        return _replace(job, status=RUNNING, worker=worker, claimed_at=now, heartbeat_at=now)

    def _mark_lost(self, job: Job, now: float) -> bool:
        """The compare-and-set of a reap: True for the one reaper that wins ``job``."""
        silent_since = _iso(job.heartbeat_at or job.claimed_at or job.requested_at)
        error = f"worker {job.worker} stopped heartbeating at {silent_since}"
        with self.store.engine.begin() as con:
            done = con.execute(
                jobs.update()
                .where(jobs.c.job_id == job.job_id, jobs.c.status == RUNNING,
                       jobs.c.heartbeat_at == job.heartbeat_at)
                .values(status=LOST, finished_at=now, error=error)
            )
            if done.rowcount == 1 and job.run_id:
                con.execute(
                    runs.update().where(runs.c.run_id == job.run_id, runs.c.status == "running")
                    .values(status="interrupted", finished_at=now)
                )
        return done.rowcount == 1

    def _relaunch(self, job: Job, now: float) -> None:
        """Open the incident, record the relaunch, queue it (or hand it to a queued job)."""
        from mendflow.remediation.diagnosis import Diagnosis, FailureClass
        from mendflow.remediation.ledger import Ledger
        from mendflow.remediation.playbook import Action

        silent_since = _iso(job.heartbeat_at or job.claimed_at or job.requested_at)
        diagnosis = Diagnosis(
            FailureClass.WORKER_LOST, f"worker:{job.worker}", "WorkerLost", None,
            f"worker {job.worker} stopped heartbeating at {silent_since} while running job "
            f"{job.job_id} (run {job.run_id or 'not started'}); the lease was taken back",
        )
        ledger = Ledger(self.store)
        incident = ledger.open(pipeline=job.pipeline, run_id=job.run_id or "",
                               diagnosis=diagnosis, at=now)
        queued = self.enqueue_or_attach(job.pipeline, reason="relaunch",
                                        incident_id=incident.incident_id,
                                        attempt=job.attempt + 1)
        ledger.act(incident.incident_id, action=str(Action.RELAUNCH), outcome="tried",
                   detail=f"lost job {job.job_id}: job {queued.job_id} resumes from the "
                   "checkpoint", at=now)

    def _holder(self, pipeline: str) -> str:
        job = self.running(pipeline)
        if job is None:
            return "a job that just ended"
        return f"job {job.job_id}, {job.kind} by {job.worker}"

    def _beat(self, job: Job, stop: threading.Event, every_s: float) -> None:
        while not stop.wait(every_s):
            if not self.heartbeat(job.job_id, job.worker or ""):
                return

    def _writing(self, pipeline: str | None = None) -> AbstractContextManager[sa.Connection]:
        """A transaction holding the write lock: SQLite's file lock (``BEGIN IMMEDIATE``), or on
        PostgreSQL a transaction-scoped advisory lock of ``pipeline`` (when given)."""
        key = None if pipeline is None else _lock_key(pipeline)
        return write_transaction(self.store.engine, lock_key=key)


class _Refused(Exception):
    """A claim lost the race for ``pipeline``'s lease."""

    def __init__(self, pipeline: str) -> None:
        super().__init__(pipeline)
        self.pipeline = pipeline


def _new_id() -> str:
    return uuid.uuid4().hex


def _lock_key(pipeline: str) -> int:
    """A signed 64-bit advisory lock key for the pipeline's queue."""
    digest = hashlib.blake2b(f"mendflow.jobs:{pipeline}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _queued_of(pipeline: str) -> sa.Select[Any]:
    return sa.select(jobs.c.job_id, jobs.c.incident_id).where(
        jobs.c.pipeline == pipeline, jobs.c.status == QUEUED, jobs.c.kind == "run"
    ).limit(1)


def _held(job_id: str, worker: str) -> tuple[sa.ColumnElement[bool], ...]:
    return jobs.c.job_id == job_id, jobs.c.worker == worker, jobs.c.status == RUNNING


def _job(row: Any) -> Job:
    return Job(**{name: row[name] for name in Job.__slots__})


def _replace(job: Job, **changes: Any) -> Job:
    return Job(**(job.as_dict() | changes))


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


__all__: Sequence[str] = ("ENDINGS", "Job", "JobQueue")
