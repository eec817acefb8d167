"""Workers: running queued jobs, relaunching lost ones as ledger incidents, failing jobs that do
not stop the loop; and the stuck-run acceptance test with real ``mendflow worker`` processes,
one of them SIGKILLed in the middle of a run."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from mendflow import config
from mendflow.cli import main
from mendflow.remediation.ledger import Ledger
from mendflow.remediation.supervisor import run_healing
from mendflow.server.catalog import Catalog
from mendflow.server.worker import Worker, WorkerInterrupted
from mendflow.state.jobs import Job, JobQueue
from mendflow.state.schema import batches as batches_table
from mendflow.state.schema import jobs as jobs_table
from mendflow.state.store import StateStore
from mendflow.testing import FakeClock
from tests import _pg_hash
from tests._pg import fresh_database
from tests._service import free_port
from tests.conftest import dead_letter_hash, table_hash, write_orders, write_pipeline
from tests.worker_transforms import DELAY_ENV

ROOT = Path(__file__).resolve().parent.parent
FILES, ROWS, BATCH = 12, 2_000, 500  # 48 batches
LEASE_S, HEARTBEAT_S, POLL_S = 4.0, 1.0, 0.2
DELAY_S = 0.05  # per batch in the workers: a run takes ~5 s, long enough to be killed in
#: How late past the lease timeout the surviving worker may claim the relaunch.
MARGIN_S = 5.0


def _pipeline(folder: Path, drops: Path, *, name: str = "orders", pg: str = "",
              transform: str = "slow") -> Path:
    """The pipeline YAML in ``folder``: the drops merged into DuckDB (or PostgreSQL ``pg``)."""
    destination: dict[str, Any] = {"type": "duckdb", "path": str(folder / "dest.duckdb")}
    if pg:
        destination = {"type": "postgres", "url": pg}
    folder.mkdir(exist_ok=True)
    return write_pipeline(
        folder / f"{name}.yaml", name=name,
        source={"type": "files", "path": str(drops / "*.jsonl"), "batch_size": BATCH},
        destination=destination | {"table": "orders"}, write_mode="merge", primary_key=["id"],
        columns={"amount": "double", "updated_at": "timestamptz"},
        transforms=[{"python": f"tests.worker_transforms:{transform}"}],
    )


@pytest.fixture(scope="module")
def drops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve files of 2,000 orders, a few malformed (dead letters)."""
    folder = tmp_path_factory.mktemp("worker") / "drops"
    folder.mkdir()
    for n in range(FILES):
        write_orders(folder / f"orders-{n:02d}.jsonl", start=n * ROWS + 1, count=ROWS, seed=n,
                     bad_every=97)
    return folder


@pytest.fixture
def small_drops(tmp_path: Path) -> Path:
    """Two files of 300 orders."""
    folder = tmp_path / "small"
    folder.mkdir()
    for n in range(2):
        write_orders(folder / f"o-{n}.jsonl", start=n * 300 + 1, count=300, seed=n, bad_every=50)
    return folder


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    """A SQLite state store."""
    opened = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    yield opened
    opened.close()


# -- in-process workers --------------------------------------------------------------------------


def test_worker_runs_a_queued_job(tmp_path: Path, small_drops: Path, store: StateStore) -> None:
    """A worker claims a queued job, runs the pipeline and ends the job succeeded."""
    catalog = Catalog.load([_pipeline(tmp_path / "p", small_drops)])
    worker = Worker(store, catalog, name="w1", lease_timeout_s=30)
    assert worker.run_one() is None
    queued = JobQueue(store).enqueue("orders", reason="manual")
    assert queued is not None
    done = worker.run_one()
    assert done is not None
    assert (done.job_id, done.status, done.worker) == (queued.job_id, "succeeded", "w1")
    assert done.run_id == store.runs(pipeline="orders")[0]["run_id"]
    assert table_hash(tmp_path / "p" / "dest.duckdb", "orders")[0] == 588
    assert Ledger(store).incidents() == []


def test_worker_relaunches_a_lost_job_and_heals_it(
    tmp_path: Path, small_drops: Path, store: StateStore
) -> None:
    """A job whose worker went silent is reaped by another worker, which runs the relaunch and
    records relaunch (tried) then verify (succeeded) on a healed worker_lost incident."""
    clock = FakeClock()
    catalog = Catalog.load([_pipeline(tmp_path / "p", small_drops)])
    queue = JobQueue(store, clock=clock)
    queue.enqueue("orders", reason="schedule")
    dead = queue.claim("dead-worker")
    assert dead is not None
    clock.advance(31)
    worker = Worker(store, catalog, name="w2", lease_timeout_s=30, clock=clock)
    relaunch = worker.run_one()
    assert relaunch is not None
    assert (relaunch.reason, relaunch.status, relaunch.attempt) == ("relaunch", "succeeded", 2)
    lost = queue.get(dead.job_id)
    assert lost is not None
    assert lost.status == "lost"
    [incident] = Ledger(store).incidents(pipeline="orders")
    assert incident["incident_id"] == relaunch.incident_id
    assert (incident["failure_class"], incident["status"]) == ("worker_lost", "healed")
    assert incident["dependency"] == "worker:dead-worker"
    assert [(a["action"], a["outcome"]) for a in incident["actions"]] == [
        ("relaunch", "tried"), ("verify", "succeeded")]
    assert f"run {relaunch.run_id} succeeded" in incident["actions"][1]["detail"]


def test_failing_job_ends_failed_and_the_loop_goes_on(
    tmp_path: Path, small_drops: Path, store: StateStore
) -> None:
    """A run that raises ends its job failed with the error (password masked); the worker then
    runs the next job."""
    bad = _pipeline(tmp_path / "bad", small_drops, name="bad", transform="boom")
    good = _pipeline(tmp_path / "good", small_drops, name="good")
    worker = Worker(store, Catalog.load([bad, good]), name="w1", lease_timeout_s=30,
                    clock=FakeClock())
    queue = JobQueue(store)
    queue.enqueue("bad", reason="manual")
    time.sleep(0.01)
    queue.enqueue("good", reason="manual")
    assert worker.run_forever(threading.Event(), max_jobs=2) == 2
    [failed] = queue.jobs(pipeline="bad")
    assert failed.status == "failed"
    assert failed.error is not None
    assert "TransformError" in failed.error
    assert "s3cret-pw" not in failed.error
    assert [j.status for j in queue.jobs(pipeline="good")] == ["succeeded"]


def test_failed_relaunch_records_a_failed_verify(
    tmp_path: Path, small_drops: Path, store: StateStore
) -> None:
    """A relaunch that fails records verify (failed) and leaves its incident open."""
    clock = FakeClock()
    catalog = Catalog.load([_pipeline(tmp_path / "bad", small_drops, name="bad",
                                      transform="boom")])
    queue = JobQueue(store, clock=clock)
    queue.enqueue("bad", reason="schedule")
    assert queue.claim("dead-worker") is not None
    clock.advance(60)
    relaunch = Worker(store, catalog, name="w2", lease_timeout_s=30, clock=clock).run_one()
    assert relaunch is not None
    assert relaunch.status == "failed"
    lost = next(i for i in Ledger(store).incidents(pipeline="bad")
                if i["failure_class"] == "worker_lost")
    assert lost["status"] != "healed"
    assert [(a["action"], a["outcome"]) for a in lost["actions"]] == [
        ("relaunch", "tried"), ("verify", "failed")]
    assert "s3cret-pw" not in lost["actions"][1]["detail"]


def test_worker_that_lost_its_lease_does_not_finish_the_job(
    tmp_path: Path, small_drops: Path, store: StateStore, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker whose job was reaped mid-run notices at its heartbeat, stops heartbeating and
    leaves the job lost (the relaunch takes over)."""
    monkeypatch.setenv(DELAY_ENV, "0.05")
    clock = FakeClock()
    catalog = Catalog.load([_pipeline(tmp_path / "p", small_drops)])
    queue = JobQueue(store, clock=clock)
    queue.enqueue("orders", reason="manual")
    reaped: list[Job] = []

    def reap_now(event: Any) -> None:
        if event.kind == "batch.loaded" and not reaped:
            reaper = JobQueue(store, clock=clock)
            while not reaped:  # "silent for -1 s": every running job, whatever its heartbeats
                reaped.extend(reaper.reap(timeout_s=-1))
            time.sleep(0.1)  # a few heartbeats

    worker = Worker(store, catalog, name="w1", lease_timeout_s=30, heartbeat_s=0.01,
                    clock=clock, hooks=[reap_now])
    with caplog.at_level(logging.WARNING, logger="mendflow.worker"):
        done = worker.run_one()
    assert done is not None
    assert [j.job_id for j in reaped] == [done.job_id]
    assert done.status == "lost"
    assert "no longer this worker's" in caplog.text
    assert "was reaped while this worker ran it" in caplog.text
    assert [j.reason for j in queue.jobs(pipeline="orders", status="queued")] == ["relaunch"]


def test_interrupt_stops_the_job_at_its_next_step(
    tmp_path: Path, small_drops: Path, store: StateStore
) -> None:
    """An interrupted worker raises at the run's next event, ends the job failed and queues a
    relaunch that keeps the job's incident."""
    catalog = Catalog.load([_pipeline(tmp_path / "p", small_drops)])
    queue = JobQueue(store)
    queue.enqueue_or_attach("orders", reason="alert", incident_id="inc1")
    worker: Worker

    def interrupt_at_first_batch(event: Any) -> None:
        if event.kind == "batch.read":
            worker.interrupt()

    worker = Worker(store, catalog, name="w1", hooks=[interrupt_at_first_batch])
    with pytest.raises(WorkerInterrupted):
        worker.run_one()
    [ended] = queue.jobs(status="failed")
    assert ended.error == "interrupted (WorkerInterrupted) on worker w1"
    [again] = queue.jobs(status="queued")
    assert (again.reason, again.incident_id, again.attempt) == ("relaunch", "inc1", 2)
    assert queue.running("orders") is None


def test_worker_timings_are_checked(store: StateStore) -> None:
    """Timings that cannot work (heartbeat not shorter than the lease) are refused."""
    with pytest.raises(ValueError, match="heartbeat_s < lease_timeout_s"):
        Worker(store, Catalog(), lease_timeout_s=5, heartbeat_s=5)
    assert Worker(store, Catalog(), lease_timeout_s=9).heartbeat_s == 3.0
    assert Worker(store, Catalog()).name.count(":") == 2


def test_worker_command_refuses_bad_options(tmp_path: Path, small_drops: Path) -> None:
    """``mendflow worker`` says what is wrong with its paths and timings (exit 2)."""
    runner = CliRunner()
    missing = runner.invoke(main, ["worker", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert "not found" in missing.output
    path = _pipeline(tmp_path / "p", small_drops)
    timing = runner.invoke(main, ["worker", str(path), "--state",
                                  f"sqlite:///{tmp_path / 's.db'}", "--lease-timeout-s", "3",
                                  "--heartbeat-s", "3"])
    assert timing.exit_code == 2
    assert "must be shorter than --lease-timeout-s" in timing.output
    empty = tmp_path / "empty"
    empty.mkdir()
    none = runner.invoke(main, ["worker", str(empty)])
    assert none.exit_code == 2
    assert "no pipeline files" in none.output


# -- the stuck-run acceptance test ---------------------------------------------------------------


@dataclass
class _Setup:
    """Where the live run and the reference run keep their state and data."""

    live_state: str
    live_outcome: Callable[[], tuple[tuple[int, str], tuple[int, str]]]
    reference: tuple[tuple[int, str], tuple[int, str]]
    pipeline: Path


@pytest.fixture(params=["sqlite-duckdb", "postgresql"])
def setup(request: pytest.FixtureRequest, tmp_path: Path, drops: Path) -> Iterator[_Setup]:
    """SQLite state + DuckDB destination, or PostgreSQL state and destination (one database);
    with the destination of a fault-free run of the same pipeline elsewhere."""
    if request.param == "sqlite-duckdb":
        ref = _pipeline(tmp_path / "ref", drops)
        _reference_run(ref, f"sqlite:///{tmp_path / 'ref' / 'state.db'}")
        live = _pipeline(tmp_path / "live", drops)
        db = live.parent / "dest.duckdb"
        yield _Setup(
            f"sqlite:///{live.parent / 'state.db'}",
            lambda: (table_hash(db, "orders"), dead_letter_hash(db)),
            (table_hash(ref.parent / "dest.duckdb", "orders"),
             dead_letter_hash(ref.parent / "dest.duckdb")),
            live,
        )
        return
    request.getfixturevalue("pg_url")  # skips (or fails under CI) without PostgreSQL
    with fresh_database() as ref_url, fresh_database() as live_url:
        _reference_run(_pipeline(tmp_path / "ref", drops, pg=ref_url), ref_url)
        yield _Setup(
            live_url,
            lambda: (_pg_hash.table_hash(live_url, "orders"), _pg_hash.dead_letter_hash(live_url)),
            (_pg_hash.table_hash(ref_url, "orders"), _pg_hash.dead_letter_hash(ref_url)),
            _pipeline(tmp_path / "live", drops, pg=live_url),
        )


def _reference_run(path: Path, state: str) -> None:
    spec = config.load(path)
    reference = StateStore(state)
    try:
        run_healing(spec.pipeline, store=reference, healing=spec.healing)
    finally:
        reference.close()


def _start_worker(name: str, pipeline: Path, state: str, log: Path, *extra: str
                  ) -> subprocess.Popen[bytes]:
    env = {**os.environ, DELAY_ENV: str(DELAY_S), "PYTHONPATH": str(ROOT)}
    env.pop("MENDFLOW_STATE_URL", None)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mendflow", "worker", str(pipeline), "--state", state,
             "--name", name, "--lease-timeout-s", str(LEASE_S), "--heartbeat-s",
             str(HEARTBEAT_S), "--poll-s", str(POLL_S), "--log-format", "text", *extra],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=pipeline.parent,
        )


def _wait(what: str, check: Callable[[], Any], timeout_s: float, logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)
    pytest.fail(f"timed out after {timeout_s:g}s waiting for {what}\n{tails}")


class _Overlaps:
    """Samples the running jobs per pipeline in the background; remembers any overlap."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        query = (sa.select(sa.func.count()).select_from(jobs_table)
                 .where(jobs_table.c.status == "running", jobs_table.c.pipeline == "orders"))
        while not self._stop.wait(0.05):
            with contextlib.suppress(sa.exc.OperationalError), self.store.engine.connect() as c:
                self.seen.append(int(c.execute(query).scalar_one()))

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.seen


def test_stuck_run_is_relaunched_by_another_worker(setup: _Setup, tmp_path: Path) -> None:
    """The worker running a pipeline is SIGKILLed; the other worker relaunches it from the
    checkpoint within the lease timeout; the destination equals a fault-free run's, and the
    ledger shows one worker_lost incident, healed, with relaunch then verify."""
    store = StateStore(setup.live_state)
    queue = JobQueue(store)
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    workers: dict[str, subprocess.Popen[bytes]] = {}
    ports = {"w1": free_port(), "w2": free_port()}
    overlaps: _Overlaps | None = None
    try:
        first = queue.enqueue("orders", reason="manual")
        assert first is not None
        for name, log in zip(("w1", "w2"), logs, strict=True):
            workers[name] = _start_worker(name, setup.pipeline, setup.live_state, log,
                                          "--metrics-port", str(ports[name]))
        overlaps = _Overlaps(store)

        def committed() -> Job | None:
            job = queue.get(first.job_id)
            if job is None or job.status != "running" or not job.run_id:
                return None
            with store.engine.connect() as con:
                n = con.execute(sa.select(sa.func.count()).select_from(batches_table).where(
                    batches_table.c.run_id == job.run_id)).scalar_one()
            return job if n >= 2 else None

        running: Job = _wait("a worker to commit batches", committed, 60, logs)
        assert running.worker in workers
        victim, survivor = running.worker, next(n for n in workers if n != running.worker)
        workers[victim].send_signal(signal.SIGKILL)
        workers[victim].wait(timeout=10)
        run = store.runs(pipeline="orders")[0]
        assert run["status"] == "running"  # killed mid-run

        def relaunched() -> Job | None:
            found = [j for j in queue.jobs(pipeline="orders") if j.reason == "relaunch"]
            return found[0] if found and found[0].status != "queued" else None

        relaunch: Job = _wait("the relaunch to be claimed", relaunched, LEASE_S + 30, logs)
        lost = queue.get(first.job_id)
        assert lost is not None
        assert lost.status == "lost"
        assert relaunch.worker == survivor
        assert lost.heartbeat_at is not None
        assert relaunch.claimed_at is not None
        assert relaunch.claimed_at - lost.heartbeat_at <= LEASE_S + MARGIN_S
        done: Job = _wait("the relaunch to finish",
                          lambda: (j := queue.get(relaunch.job_id)) and j.finished_at and j,
                          90, logs)
        assert done.status == "succeeded", done.error
        assert max(overlaps.stop()) == 1

        runs = {r["run_id"]: r for r in store.runs(pipeline="orders")}
        assert runs[run["run_id"]]["status"] == "interrupted"
        assert done.run_id is not None
        assert runs[done.run_id]["status"] == "succeeded"
        resumed_from = store.events(done.run_id)[0]
        assert resumed_from["kind"] == "run.started"
        assert resumed_from["checkpoint"]  # from the lost run's last committed batch
        assert setup.live_outcome() == setup.reference

        [incident] = Ledger(store).incidents(pipeline="orders")
        assert (incident["failure_class"], incident["status"]) == ("worker_lost", "healed")
        assert incident["dependency"] == f"worker:{victim}"
        assert incident["incident_id"] == done.incident_id
        assert [(a["action"], a["outcome"]) for a in incident["actions"]] == [
            ("relaunch", "tried"), ("verify", "succeeded")]

        scraped = httpx.get(f"http://127.0.0.1:{ports[survivor]}/metrics", timeout=10).text
        assert 'mendflow_batch_duration_seconds_count{pipeline="orders"}' in scraped

        workers[survivor].send_signal(signal.SIGTERM)  # idle: it exits at once, status 0
        assert workers[survivor].wait(timeout=30) == 0
    finally:
        if overlaps is not None:
            overlaps.stop()
        for process in workers.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        store.close()


def test_second_signal_interrupts_the_job_and_hands_it_back(tmp_path: Path, drops: Path) -> None:
    """A worker told twice to stop interrupts its job: the job ends failed, a relaunch is queued
    for another worker, and the command exits 130."""
    state = f"sqlite:///{tmp_path / 'state.db'}"
    pipeline = _pipeline(tmp_path / "p", drops)
    store = StateStore(state)
    queue = JobQueue(store)
    log = tmp_path / "w.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        job = queue.enqueue("orders", reason="schedule")
        assert job is not None
        process = _start_worker("w1", pipeline, state, log)
        _wait("the job to start", lambda: (j := queue.get(job.job_id)) and j.run_id, 60, [log])
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert process.poll() is None  # the first signal lets the job go on
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 130
        ended = queue.get(job.job_id)
        assert ended is not None
        assert ended.status == "failed"
        assert ended.error == "interrupted (WorkerInterrupted) on worker w1"
        [again] = queue.jobs(status="queued")
        assert (again.reason, again.attempt) == ("relaunch", 2)
        assert "interrupted; the next run resumes" in log.read_text()
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        store.close()
