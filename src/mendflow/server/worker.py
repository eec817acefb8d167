"""A worker: take queued jobs from the state store and run them, heartbeating while it does.

    worker = Worker(store, catalog, name="host:1234:1", lease_timeout_s=30)
    worker.run_one()                 # reap silent jobs, claim one, run it -> the job, or None
    worker.run_forever(stop)         # until ``stop`` is set

The same loop runs in ``mendflow worker`` processes and in the worker threads of ``mendflow
serve``, on any number of machines sharing one state store. A claimed job is its pipeline's
lease (``state/jobs.py``): no other worker runs the pipeline until the job ends.

Running a job is ``run_healing`` on the pipeline built afresh from its YAML file, with a thread
heartbeating every ``heartbeat_s`` (default a third of ``lease_timeout_s``) and naming the run
once it started. A worker that stops heartbeating (SIGKILLed, its machine gone, stalled longer
than the timeout) has its job reaped by any worker or scheduler: the job is marked lost, a
``worker_lost`` incident opens, and a relaunch is queued, which another worker claims and runs
from the pipeline's committed checkpoint.

When a heartbeat finds the job no longer ours (it was reaped while this worker was stalled), the
worker stops heartbeating and lets its run end; the relaunch may then run at the same time. The
data stays right: each batch commits with its checkpoint in one destination transaction, and a
batch whose identity is committed already is skipped, so the two runs never load a batch twice
(the loser of a race for one batch fails or skips it). The job is not finished by the worker
that lost it.

A job that carries an incident (a relaunch, or a run an alert asked for) is verified on the
ledger when it ends: ``verify`` ``succeeded`` and the incident healed, or ``verify`` ``failed``.
A successful run also heals any other ``worker_lost`` incident of the pipeline still open (a
relaunch that found a queued job carrying another incident). A run that raises ends its job
``failed`` with the error (passwords masked); the worker goes on with the next job.

``interrupt()`` (the second SIGTERM of ``mendflow worker``) stops the job at its next run event
(a batch read, transformed, staged or loaded) by raising ``WorkerInterrupted``, a
``KeyboardInterrupt``: not at an arbitrary point, where a database driver could turn it into an
error of its own that healing would retry. Any ``KeyboardInterrupt`` in the middle of a job ends
the job ``failed``, queues a relaunch carrying its incident, and is raised again.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
from collections.abc import Iterable, Sequence

from mendflow._redact import redact
from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.config import PipelineFile
from mendflow.events import Event, RunFailed, RunFinished, RunStarted
from mendflow.remediation.diagnosis import FailureClass
from mendflow.remediation.escalation import LogNotifier, Notifier, WebhookNotifier
from mendflow.remediation.ledger import Ledger
from mendflow.remediation.supervisor import run_healing
from mendflow.server.catalog import Catalog
from mendflow.state.jobs import FAILED, SUCCEEDED, Job, JobQueue
from mendflow.state.store import StateStore
from mendflow.typing import Hook

log = logging.getLogger("mendflow.worker")
_numbers = itertools.count(1)
WEBHOOK_ENV = "MENDFLOW_WEBHOOK_URL"


class WorkerInterrupted(KeyboardInterrupt):
    """Raised inside a run when its worker was told to interrupt it."""


def default_name() -> str:
    """``host:pid:n``, unique among the workers of this process and machine."""
    return f"{socket.gethostname()}:{os.getpid()}:{next(_numbers)}"


class Worker:
    """Claims and runs jobs (see the module docstring)."""

    def __init__(
        self,
        store: StateStore,
        catalog: Catalog,
        *,
        name: str | None = None,
        lease_timeout_s: float = 30.0,
        heartbeat_s: float | None = None,
        poll_s: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
        hooks: Iterable[Hook] = (),
        notifiers: Iterable[Notifier] = (),
    ) -> None:
        heartbeat_s = lease_timeout_s / 3 if heartbeat_s is None else heartbeat_s
        if lease_timeout_s <= 0 or poll_s <= 0 or not 0 < heartbeat_s < lease_timeout_s:
            raise ValueError(
                f"worker timings lease_timeout_s={lease_timeout_s}, heartbeat_s={heartbeat_s}, "
                f"poll_s={poll_s} are out of range: all > 0 and heartbeat_s < lease_timeout_s"
            )
        self.store = store
        self.catalog = catalog
        self.name = name or default_name()
        self.lease_timeout_s = lease_timeout_s
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self.clock = clock
        self.hooks = list(hooks)
        self.notifiers = list(notifiers)
        self.jobs = JobQueue(store, clock=clock)
        self.ledger = Ledger(store)
        self._interrupt = threading.Event()

    def interrupt(self) -> None:
        """Stop the job being run at its next run event (see the module docstring)."""
        self._interrupt.set()

    def _interrupt_hook(self, event: Event) -> None:
        if self._interrupt.is_set() and not isinstance(event, RunFailed | RunFinished):
            self._interrupt.clear()
            raise WorkerInterrupted(f"worker {self.name} was told to interrupt the run")

    def run_one(self) -> Job | None:
        """Reap silent jobs, claim the oldest claimable job of the catalog's pipelines and run
        it; return it as it ended (None when there was nothing to run)."""
        try:
            for lost in self.jobs.reap(timeout_s=self.lease_timeout_s):
                log.warning("job %s of %s lost: %s", lost.job_id, lost.pipeline, lost.error)
        except Exception:
            log.exception("could not reap silent jobs")
        job = self.jobs.claim(self.name, pipelines=self.catalog.names())
        if job is None:
            return None
        return self.execute(job)

    def run_forever(self, stop: threading.Event, *, max_jobs: int | None = None) -> int:
        """Run jobs until ``stop`` is set (checked between jobs) or ``max_jobs`` ran; waiting
        ``poll_s`` when none is queued. Return how many jobs ran."""
        done = 0
        while not stop.is_set() and (max_jobs is None or done < max_jobs):
            try:
                job = self.run_one()
            except Exception:  # the store is unreachable, say: wait and try again
                log.exception("worker %s could not take a job", self.name)
                job = None
            if job is None:
                stop.wait(self.poll_s)
            else:
                done += 1
        return done

    def execute(self, job: Job) -> Job:
        """Run a job this worker claimed, finish it, verify its incident; return it as it
        ended."""
        lease = _Lease(self.jobs, job, self.name, self.heartbeat_s)
        log.info("worker %s runs job %s of %s (%s)", self.name, job.job_id, job.pipeline,
                 job.reason, extra={"job_id": job.job_id, "incident_id": job.incident_id})
        status, error, run_id = FAILED, None, None
        lease.start()
        try:
            run_id = self._run(job, lease)
            status = SUCCEEDED
        except Exception as exc:  # noqa: BLE001 - a failing job ends the job, not the worker
            error = redact(f"{type(exc).__name__}: {exc}")
            log.error("job %s of %s failed: %s", job.job_id, job.pipeline, error,
                      extra={"job_id": job.job_id})
        except BaseException as exc:
            lease.stop()
            self._interrupted(job, lease, exc)
            raise
        finally:
            lease.stop()
        run_id = run_id or lease.run_id
        finished = self.jobs.finish(job.job_id, self.name, status=status, run_id=run_id,
                                    error=error)
        ended = self.jobs.get(job.job_id) or job  # with any incident attached while it ran
        if not finished:
            log.warning("job %s of %s was reaped while this worker ran it; its relaunch "
                        "takes over", job.job_id, job.pipeline)
        elif status == SUCCEEDED or ended.incident_id:
            self._verify(ended, ok=status == SUCCEEDED, run_id=run_id, error=error)
        return ended

    def _run(self, job: Job, lease: _Lease) -> str:
        if job.kind != "run":
            raise ValueError(f"a worker runs jobs of kind 'run', not {job.kind!r}")
        spec = self.catalog.get(job.pipeline)
        result = run_healing(
            spec.pipeline, store=self.store, healing=spec.healing,
            notifiers=[*self.notifiers, *_notifiers(spec)],
            hooks=[self._interrupt_hook, *self.hooks, lease.hook],
            clock=self.clock,
        )
        return result.run_id

    def _verify(self, job: Job, *, ok: bool, run_id: str | None, error: str | None) -> None:
        """Record how the job's incident ended; on success heal it, and any other lost-worker
        incident of the pipeline left open."""
        ids = [job.incident_id] if job.incident_id else []
        if ok:
            ids += [i.incident_id for i in self.ledger.unhealed(job.pipeline)
                    if i.failure_class == FailureClass.WORKER_LOST and i.incident_id not in ids]
        now = self.clock.now()
        for incident_id in ids:
            detail = (f"run {run_id} succeeded" if ok else f"run {run_id} failed: {error}")
            detail += f" (job {job.job_id} on worker {self.name})"
            self.ledger.act(incident_id, action="verify", outcome="succeeded" if ok else "failed",
                            detail=detail, at=now)
            if ok:
                self.ledger.heal(incident_id, at=now)

    def _interrupted(self, job: Job, lease: _Lease, exc: BaseException) -> None:
        """End the interrupted job and queue its relaunch (keeping its incident)."""
        try:
            self.jobs.finish(job.job_id, self.name, status=FAILED, run_id=lease.run_id,
                             error=f"interrupted ({type(exc).__name__}) on worker {self.name}")
            if job.incident_id:
                self.jobs.enqueue_or_attach(job.pipeline, reason="relaunch",
                                            incident_id=job.incident_id, attempt=job.attempt + 1)
            else:
                self.jobs.enqueue(job.pipeline, reason="relaunch", attempt=job.attempt + 1)
        except Exception:
            log.exception("could not hand job %s back after the interrupt", job.job_id)


class _Lease:
    """The heartbeat thread of one job, and the run id it reports."""

    def __init__(self, queue: JobQueue, job: Job, worker: str, every_s: float) -> None:
        self.queue = queue
        self.job = job
        self.worker = worker
        self.every_s = every_s
        self.run_id: str | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name=f"mendflow-heartbeat-{job.job_id[:8]}")

    def hook(self, event: Event) -> None:
        """Note the run id as each run of the job starts (a heartbeat reports it at once)."""
        if isinstance(event, RunStarted):
            self.run_id = event.run_id
            self._beat_once()

    def start(self) -> None:
        """Start heartbeating."""
        self._thread.start()

    def stop(self) -> None:
        """Stop heartbeating (idempotent)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            if not self._beat_once():
                return

    def _beat_once(self) -> bool:
        """One heartbeat; False once the lease is known lost."""
        if self.lost:
            return False
        try:
            mine = self.queue.heartbeat(self.job.job_id, self.worker, run_id=self.run_id)
        except Exception:  # the store is down for now: the next beat tries again
            log.warning("heartbeat of job %s failed", self.job.job_id, exc_info=True)
            return True
        if not mine:
            self.lost = True
            log.warning("job %s of %s is no longer this worker's (%s): it was reaped; the run "
                        "goes on to its end, the relaunch resumes from the checkpoint",
                        self.job.job_id, self.job.pipeline, self.worker)
        return mine


def _notifiers(spec: PipelineFile) -> list[Notifier]:
    notifiers: list[Notifier] = [LogNotifier()]
    webhook = spec.webhook or os.environ.get(WEBHOOK_ENV)
    if webhook:
        notifiers.append(WebhookNotifier(webhook))
    return notifiers


__all__: Sequence[str] = ("Worker", "WorkerInterrupted", "default_name")
