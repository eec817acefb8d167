"""The run queue of the service, and the lease a running job holds on its pipeline.

SKELETON (issue 6): the interface is fixed here; helper A implements it.

    queue = JobQueue(store)
    queue.enqueue("orders", reason="schedule")      # -> Job, or None if one is queued already
    job = queue.claim("worker-1")                   # the oldest queued job whose pipeline is free
    queue.heartbeat(job.job_id, "worker-1")         # False: the lease was lost (reaped)
    queue.finish(job.job_id, "worker-1", status="succeeded", run_id=...)
    queue.reap(timeout_s=30)                        # running jobs silent too long: lost, relaunched

A job ``running`` is its pipeline's lease: a partial unique index allows one running job per
pipeline, so two workers never run one pipeline at once, whichever machines they are on.
Claiming takes the oldest claimable job with ``SELECT ... FOR UPDATE SKIP LOCKED`` on
PostgreSQL and under SQLite's single-writer lock (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.state.store import StateStore

QUEUED, RUNNING, SUCCEEDED, FAILED, LOST, CANCELLED = (
    "queued", "running", "succeeded", "failed", "lost", "cancelled")


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


class JobQueue:
    """Jobs and leases in a state store."""

    def __init__(self, store: StateStore, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = store
        self.clock = clock

    def enqueue(
        self, pipeline: str, *, reason: str, incident_id: str | None = None, attempt: int = 1
    ) -> Job | None:
        """Queue a run of ``pipeline``; None when one is queued already (not yet claimed)."""
        raise NotImplementedError

    def claim(self, worker: str, *, pipelines: Collection[str] | None = None) -> Job | None:
        """Take the oldest queued job (of ``pipelines``, if given) whose pipeline no worker is
        running, mark it running by ``worker``; None when there is none."""
        raise NotImplementedError

    def heartbeat(self, job_id: str, worker: str, *, run_id: str | None = None) -> bool:
        """Say ``worker`` is still running ``job_id`` (recording ``run_id`` once known); False
        when the job is no longer this worker's (it was reaped)."""
        raise NotImplementedError

    def finish(
        self, job_id: str, worker: str, *, status: str, run_id: str | None = None,
        error: str | None = None,
    ) -> bool:
        """End a running job (``succeeded`` or ``failed``), releasing the lease; False when the
        job was no longer this worker's."""
        raise NotImplementedError

    def reap(self, *, timeout_s: float) -> list[Job]:
        """Mark running jobs whose heartbeat is older than ``timeout_s`` lost, open a
        ``worker_lost`` incident for each in the ledger and queue a relaunch; return the lost
        jobs (each reaped once, whatever the number of reapers)."""
        raise NotImplementedError

    @contextmanager
    def hold(self, pipeline: str, worker: str, *, kind: str = "replay") -> Iterator[Job]:
        """Hold ``pipeline``'s lease for the block (a running job of ``kind``), e.g. to replay
        its dead letters; ``PipelineBusy`` when a worker runs it now."""
        raise NotImplementedError
        yield  # pragma: no cover

    def jobs(
        self, *, pipeline: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[Job]:
        """Jobs, newest first."""
        raise NotImplementedError

    def get(self, job_id: str) -> Job | None:
        """One job by id."""
        raise NotImplementedError


__all__: Sequence[str] = ("Job", "JobQueue")
