"""The job queue: enqueue dedupe, claims and leases, heartbeats, finish, reaping, holding a lease;
on SQLite and on PostgreSQL, with a fake clock."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import sqlalchemy as sa

from mendflow.events import RunStarted
from mendflow.exceptions import PipelineBusy
from mendflow.remediation.ledger import Ledger
from mendflow.state.jobs import Job, JobQueue
from mendflow.state.schema import jobs as jobs_table
from mendflow.state.store import StateStore
from mendflow.testing import FakeClock


@pytest.fixture
def queue(store: StateStore, clock: FakeClock) -> JobQueue:
    """A job queue on the store and the fake clock."""
    return JobQueue(store, clock=clock)


def _claimed(queue: JobQueue, worker: str) -> Job:
    job = queue.claim(worker)
    assert job is not None
    return job


def _running_per_pipeline(store: StateStore) -> Counter[str]:
    query = sa.select(jobs_table.c.pipeline).where(jobs_table.c.status == "running")
    with store.engine.connect() as con:
        return Counter(row.pipeline for row in con.execute(query))


def test_enqueue_dedupes_queued_jobs(queue: JobQueue) -> None:
    """A pipeline has at most one queued job; another may be queued once that one is claimed."""
    first = queue.enqueue("orders", reason="manual")
    assert first is not None
    assert first.status == "queued"
    assert first.kind == "run"
    assert queue.enqueue("orders", reason="schedule") is None
    assert queue.enqueue("other", reason="schedule") is not None
    claimed = queue.claim("w1", pipelines=["orders"])
    assert claimed is not None
    assert claimed.job_id == first.job_id
    again = queue.enqueue("orders", reason="schedule")
    assert again is not None
    assert again.reason == "schedule"


def test_claim_takes_oldest_claimable_job(queue: JobQueue, clock: FakeClock) -> None:
    """Claims go oldest first, filtered by pipelines, and None when nothing is queued."""
    assert queue.claim("w1") is None
    a = queue.enqueue("a", reason="manual")
    clock.advance(1)
    b = queue.enqueue("b", reason="manual")
    assert a is not None
    assert b is not None
    assert queue.claim("w1", pipelines=[]) is None
    got = queue.claim("w1", pipelines=["b"])
    assert got is not None
    assert got.job_id == b.job_id
    assert got.status == "running"
    assert got.worker == "w1"
    assert got.heartbeat_at == clock.now()
    assert _claimed(queue, "w2").job_id == a.job_id
    assert queue.claim("w3") is None


def test_a_pipeline_being_run_is_not_claimable(queue: JobQueue, clock: FakeClock) -> None:
    """A job waits while its pipeline has a running job, and is claimable once that ends."""
    queue.enqueue("orders", reason="manual")
    first = _claimed(queue, "w1")
    clock.advance(1)
    waiting = queue.enqueue("orders", reason="manual")
    clock.advance(1)
    other = queue.enqueue("other", reason="manual")
    assert waiting is not None
    assert other is not None
    assert _claimed(queue, "w2").job_id == other.job_id
    assert queue.claim("w3") is None
    assert queue.finish(first.job_id, "w1", status="succeeded")
    assert _claimed(queue, "w3").job_id == waiting.job_id


def test_heartbeat_is_the_owners_only(queue: JobQueue, clock: FakeClock) -> None:
    """Only the worker running a job can heartbeat it; the run id it names is kept."""
    queue.enqueue("orders", reason="manual")
    job = _claimed(queue, "w1")
    clock.advance(5)
    assert queue.heartbeat(job.job_id, "w1", run_id="r1")
    assert not queue.heartbeat(job.job_id, "w2")
    assert not queue.heartbeat("nope", "w1")
    now = queue.get(job.job_id)
    assert now is not None
    assert now.heartbeat_at == clock.now()
    assert now.run_id == "r1"
    assert queue.finish(job.job_id, "w1", status="succeeded")
    assert not queue.heartbeat(job.job_id, "w1")


def test_finish_is_a_compare_and_set(queue: JobQueue, clock: FakeClock) -> None:
    """Finishing needs the worker's running job, a known end status, and masks passwords."""
    queue.enqueue("orders", reason="manual")
    job = _claimed(queue, "w1")
    with pytest.raises(ValueError, match="succeeded"):
        queue.finish(job.job_id, "w1", status="done")
    assert not queue.finish(job.job_id, "w2", status="failed")
    clock.advance(3)
    assert queue.finish(job.job_id, "w1", status="failed", run_id="r9",
                       error="cannot reach postgresql://app:hunter2@db/x")
    assert not queue.finish(job.job_id, "w1", status="succeeded")
    done = queue.get(job.job_id)
    assert done is not None
    assert done.status == "failed"
    assert done.run_id == "r9"
    assert done.finished_at == clock.now()
    assert done.error is not None
    assert "hunter2" not in done.error
    assert "db/x" in done.error


def test_reap_relaunches_a_silent_job_once(store: StateStore, clock: FakeClock) -> None:
    """A job silent past the timeout is lost once, an incident opens, a relaunch is queued."""
    queue, other = JobQueue(store, clock=clock), JobQueue(store, clock=clock)
    queue.enqueue("orders", reason="schedule")
    job = _claimed(queue, "host:1:1")
    assert queue.heartbeat(job.job_id, "host:1:1", run_id="run1")
    clock.advance(30)
    assert queue.reap(timeout_s=30) == []  # exactly the timeout: not yet
    clock.advance(0.5)
    lost = queue.reap(timeout_s=30)
    assert [j.job_id for j in lost] == [job.job_id]
    assert lost[0].status == "lost"
    assert other.reap(timeout_s=30) == []
    assert not queue.heartbeat(job.job_id, "host:1:1")
    assert not queue.finish(job.job_id, "host:1:1", status="succeeded")
    relaunch = queue.jobs(pipeline="orders", status="queued")
    assert len(relaunch) == 1
    assert relaunch[0].reason == "relaunch"
    assert relaunch[0].attempt == 2
    incidents = Ledger(store).incidents(pipeline="orders")
    assert len(incidents) == 1
    incident = incidents[0]
    assert relaunch[0].incident_id == incident["incident_id"]
    assert incident["failure_class"] == "worker_lost"
    assert incident["dependency"] == "worker:host:1:1"
    assert incident["run_id"] == "run1"
    assert "stopped heartbeating at" in incident["evidence"]["message"]
    assert [(a["action"], a["outcome"]) for a in incident["actions"]] == [("relaunch", "tried")]
    assert relaunch[0].job_id in incident["actions"][0]["detail"]
    assert _claimed(queue, "w2").job_id == relaunch[0].job_id


def test_reap_hands_the_incident_to_a_queued_job(queue: JobQueue, store: StateStore,
                                                 clock: FakeClock) -> None:
    """When a run is queued already, the lost job's incident rides on it: no second job."""
    queue.enqueue("orders", reason="schedule")
    job = _claimed(queue, "w1")
    waiting = queue.enqueue("orders", reason="manual")
    assert waiting is not None
    clock.advance(60)
    assert [j.job_id for j in queue.reap(timeout_s=30)] == [job.job_id]
    queued = queue.jobs(pipeline="orders", status="queued")
    assert [j.job_id for j in queued] == [waiting.job_id]
    incident = Ledger(store).incidents(pipeline="orders")[0]
    assert queued[0].incident_id == incident["incident_id"]
    assert queued[0].attempt == 2
    assert waiting.job_id in incident["actions"][0]["detail"]


def test_reap_marks_the_lost_run_interrupted(queue: JobQueue, store: StateStore,
                                             clock: FakeClock) -> None:
    """The run the lost worker was making is marked interrupted in the run history."""
    queue.enqueue("orders", reason="manual")
    job = _claimed(queue, "w1")
    store.record(RunStarted(run_id="run1", pipeline="orders", at=clock.now(), write_mode="merge"))
    assert queue.heartbeat(job.job_id, "w1", run_id="run1")
    clock.advance(31)
    queue.reap(timeout_s=30)
    assert store.runs(pipeline="orders")[0]["status"] == "interrupted"


def test_reapers_racing_reap_each_job_once(state_url: str, clock: FakeClock) -> None:
    """Several reapers on their own connections reap a lost job once: one incident, one job."""
    stores = [StateStore(state_url) for _ in range(4)]
    try:
        queues = [JobQueue(s, clock=clock) for s in stores]
        for name in ("a", "b", "c"):
            queues[0].enqueue(name, reason="manual")
            _claimed(queues[0], "w1")
        clock.advance(100)
        results: list[list[Job]] = [[] for _ in queues]
        gate = threading.Barrier(len(queues))

        def reap(n: int) -> None:
            gate.wait()
            results[n] = queues[n].reap(timeout_s=30)

        threads = [threading.Thread(target=reap, args=(n,)) for n in range(len(queues))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        reaped = Counter(job.pipeline for result in results for job in result)
        assert reaped == Counter({"a": 1, "b": 1, "c": 1})
        incidents = Ledger(stores[0]).incidents()
        assert sorted(i["pipeline"] for i in incidents) == ["a", "b", "c"]
        assert len(queues[0].jobs(status="queued")) == 3
    finally:
        for s in stores:
            s.close()


def test_claims_racing_on_two_engines(state_url: str, clock: FakeClock) -> None:
    """Workers on two engines racing for jobs never run one pipeline twice at once, and each
    job is claimed exactly once."""
    stores = [StateStore(state_url), StateStore(state_url)]
    try:
        queues = [JobQueue(s, clock=clock) for s in stores]
        pipelines = [f"p{n}" for n in range(3)]
        wanted = 8  # jobs per pipeline, each queued while the one before is running
        total = wanted * len(pipelines)
        queued: Counter[str] = Counter()
        claimed: Counter[str] = Counter()
        running: Counter[str] = Counter()
        overlaps: list[str] = []
        lock = threading.Lock()
        for name in pipelines:
            queues[0].enqueue(name, reason="manual")
            queued[name] += 1

        def work(queue: JobQueue, worker: str) -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with lock:
                    if sum(claimed.values()) >= total:
                        return
                job = queue.claim(worker)
                if job is None:
                    time.sleep(0.001)
                    continue
                with lock:
                    claimed[job.job_id] += 1
                    running[job.pipeline] += 1
                    if running[job.pipeline] > 1:
                        overlaps.append(job.pipeline)
                    more = queued[job.pipeline] < wanted
                    queued[job.pipeline] += more
                if more:
                    assert queue.enqueue(job.pipeline, reason="manual") is not None
                time.sleep(0.002)
                with lock:
                    running[job.pipeline] -= 1
                assert queue.finish(job.job_id, worker, status="succeeded")

        threads = [threading.Thread(target=work, args=(queues[n % 2], f"w{n}"))
                   for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
        assert not overlaps
        assert set(claimed.values()) == {1}
        assert len(claimed) == total
        assert _running_per_pipeline(stores[0]) == Counter()
    finally:
        for s in stores:
            s.close()


def test_hold_takes_the_lease(queue: JobQueue, clock: FakeClock) -> None:
    """Holding a pipeline's lease blocks claims and other holds, and ends with the block."""
    queue.enqueue("orders", reason="manual")
    with queue.hold("orders", "api", kind="replay") as held:
        assert held.status == "running"
        assert held.kind == "replay"
        assert queue.claim("w1") is None
        with (
            pytest.raises(PipelineBusy, match=r"orders.*replay by api.*try again"),
            queue.hold("orders", "api2"),
        ):
            pass  # pragma: no cover
    done = queue.get(held.job_id)
    assert done is not None
    assert done.status == "succeeded"
    run = _claimed(queue, "w1")
    with (
        pytest.raises(PipelineBusy, match=f"job {run.job_id}, run by w1"),
        queue.hold("orders", "api"),
    ):
        pass  # pragma: no cover


def test_hold_records_a_failed_block(queue: JobQueue) -> None:
    """A block that raises ends its job failed with the error, and the lease is released."""
    with pytest.raises(RuntimeError), queue.hold("orders", "api") as held:
        raise RuntimeError("replay broke")
    done = queue.get(held.job_id)
    assert done is not None
    assert done.status == "failed"
    assert done.error == "RuntimeError: replay broke"
    assert queue.running("orders") is None


def test_lost_hold_is_not_relaunched(queue: JobQueue, store: StateStore,
                                     clock: FakeClock) -> None:
    """A held lease whose holder went silent is given back without a relaunch or incident."""
    with queue.hold("orders", "api", heartbeat_s=3600) as held:
        clock.advance(60)
        assert [j.job_id for j in queue.reap(timeout_s=30)] == [held.job_id]
        assert queue.jobs(status="queued") == []
    assert Ledger(store).incidents() == []


def test_cancel_only_queued_jobs(queue: JobQueue) -> None:
    """A queued job can be cancelled; a running one cannot."""
    job = queue.enqueue("orders", reason="manual")
    assert job is not None
    assert queue.cancel(job.job_id)
    assert not queue.cancel(job.job_id)
    queue.enqueue("orders", reason="manual")
    running = _claimed(queue, "w1")
    assert not queue.cancel(running.job_id)
    assert sorted(j.status for j in queue.jobs(pipeline="orders")) == ["cancelled", "running"]


def test_enqueue_or_attach(queue: JobQueue) -> None:
    """An incident's run is queued, or rides on the queued run when that carries none yet."""
    fresh = queue.enqueue_or_attach("a", reason="alert", incident_id="i1", attempt=1)
    assert (fresh.status, fresh.incident_id, fresh.reason) == ("queued", "i1", "alert")
    kept = queue.enqueue_or_attach("a", reason="alert", incident_id="i2")
    assert (kept.job_id, kept.incident_id) == (fresh.job_id, "i1")
    plain = queue.enqueue("b", reason="schedule")
    assert plain is not None
    attached = queue.enqueue_or_attach("b", reason="relaunch", incident_id="i3", attempt=2)
    assert (attached.job_id, attached.incident_id, attached.attempt) == (plain.job_id, "i3", 2)
    stored = queue.get(plain.job_id)
    assert stored is not None
    assert stored.incident_id == "i3"
    assert len(queue.jobs(status="queued")) == 2
