"""Acceptance: the destination's PostgreSQL server dies mid-run and is back 30 s later.

The run holds its batch while the server is down: the destination's breaker opens, probes every
``open_s`` (no busy loop), closes once the server is back, and the run finishes by itself with
the same rows and dead letters as a fault-free run. The ledger has one incident for the
destination, healed, with its actions; nobody is paged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from mendflow import FileSource, Pipeline, Retry, StateStore
from mendflow.events import BatchLoaded, BreakerChanged, Event, RetryScheduled
from mendflow.remediation import Ledger
from mendflow.remediation.escalation import WebhookNotifier
from mendflow.remediation.supervisor import run_healing
from mendflow.resilience.breaker import BreakerPolicy
from mendflow.sinks.postgres import PostgresSink
from mendflow.testing import EventLog
from tests._pg_cluster import OwnedServer, pg_dead_letter_hash, pg_table_hash
from tests.conftest import WebhookReceiver, write_orders

FILES, ROWS, BATCH = 16, 400, 200  # 32 batches of 200 orders
DOWN_AFTER = 8  # committed batches before the server goes down
DOWN_S = 30.0
OPEN_S = 3.0
NAME = "orders_outage"


@pytest.fixture(scope="module")
def drops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 files of 400 orders, a few amounts malformed (dead letters)."""
    folder = tmp_path_factory.mktemp("outage") / "drops"
    folder.mkdir()
    for n in range(FILES):
        write_orders(folder / f"orders-{n:02d}.jsonl", start=n * ROWS + 1, count=ROWS, seed=n,
                     bad_every=61)
    return folder


@pytest.fixture
def server() -> Iterator[OwnedServer]:
    """A PostgreSQL server this test may take down."""
    with OwnedServer() as owned:
        yield owned


def _pipeline(drops: Path, url: str) -> Pipeline:
    """Merge into ``orders``; the breaker opens after 2 failures of the last 4 calls and probes
    every OPEN_S; a batch is held up to 2 minutes, longer than the outage."""
    return Pipeline(
        name=NAME,
        source=FileSource(str(drops / "*.jsonl"), batch_size=BATCH, min_age_s=0),
        destination=PostgresSink(url, table="orders"),
        write_mode="merge", primary_key=("id",),
        columns={"amount": "double", "updated_at": "timestamptz"},
        destination_breaker=BreakerPolicy(window=4, min_calls=2, failure_rate=0.5,
                                          open_s=OPEN_S, half_open_probes=1),
        destination_retry=Retry(attempts=1_000, base_s=0.2, cap_s=1.0, deadline_s=120.0),
    )


class Outage:
    """A run hook: once ``after`` batches are committed, a thread kills the server (immediate
    shutdown, as a crash) while the run goes on, keeps it down ``down_s``, then starts it."""

    def __init__(self, server: OwnedServer, *, after: int, down_s: float) -> None:
        self.server, self.after, self.down_s = server, after, down_s
        self.loaded = 0
        self.down_at = self.up_at = 0.0
        self.thread = threading.Thread(target=self._outage, name="outage")

    def __call__(self, event: Event) -> None:
        if isinstance(event, BatchLoaded):
            self.loaded += 1
            if self.loaded == self.after:
                self.thread.start()

    def _outage(self) -> None:
        self.down_at = time.time()
        self.server.stop(mode="immediate")
        time.sleep(self.down_s)
        self.up_at = time.time()
        self.server.start()


def _batches(url: str) -> int:
    with psycopg.connect(url) as con:
        row = con.execute("SELECT count(*) FROM _mendflow_batches WHERE pipeline = %s",
                          (NAME,)).fetchone()
    assert row is not None
    return int(row[0])


def test_the_destination_down_30s_mid_run_heals_by_itself(
    drops: Path, server: OwnedServer, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """Server killed after 8 of 32 batches, back 30 s later: the run completes in one call,
    equal to a fault-free run, one healed incident in the ledger, no busy loop, no page."""
    reference = server.create_database("reference")
    reference_store = StateStore(f"sqlite:///{tmp_path / 'reference.db'}")
    _pipeline(drops, reference).run(state=reference_store)
    reference_store.close()

    target = server.create_database("target")
    pipeline = _pipeline(drops, target)
    outage = Outage(server, after=DOWN_AFTER, down_s=DOWN_S)
    log = EventLog()
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        run_healing(pipeline, store=store, hooks=[outage, log],
                    notifiers=[WebhookNotifier(receiver.url)])
        outage.thread.join(timeout=DOWN_S + 60)
        incidents = Ledger(store).incidents(pipeline=NAME)
    finally:
        store.close()

    assert outage.up_at - outage.down_at >= DOWN_S
    assert pg_table_hash(target, "orders") == pg_table_hash(reference, "orders")
    assert pg_dead_letter_hash(target) == pg_dead_letter_hash(reference)
    assert _batches(target) == _batches(reference) == FILES * ROWS // BATCH

    [incident] = incidents
    assert incident["dependency"] == pipeline.destination.name
    assert (incident["status"], incident["escalated"]) == ("healed", False)
    steps = {(a["action"], a["outcome"]) for a in incident["actions"]}
    assert {("retry", "tried"), ("circuit_breaker", "tried"), ("probe", "tried"),
            ("circuit_breaker", "succeeded")} <= steps
    assert receiver.bodies == []

    def down(event: Event) -> bool:
        return outage.down_at <= event.at <= outage.up_at

    retries = [e for e in log if isinstance(e, RetryScheduled) and down(e)]
    probes = [e for e in log if isinstance(e, BreakerChanged) and e.state == "half_open"]
    # no busy loop: per open_s, one probe that fails and one wait for the breaker
    assert 0 < len(retries) <= 2 * DOWN_S / OPEN_S + 4
    assert DOWN_S / OPEN_S / 2 <= len(probes) <= DOWN_S / OPEN_S + 2  # a probe per open_s
    assert all(e.dependency == pipeline.destination.name for e in retries)
