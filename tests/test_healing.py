"""Healing: each failure class meets its action; the ledger records it; a human is paged once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from mendflow import (
    DestinationUnavailable,
    DuckDBSink,
    FileSource,
    HttpSource,
    Pagination,
    Pipeline,
    RateLimited,
    ResourceExhausted,
    Retry,
    SchemaMismatch,
    SourceRejected,
    SourceUnavailable,
    StateStore,
)
from mendflow.demo._api import OrdersApi
from mendflow.exceptions import BadData, ConfigError, DependencyDown, TransformError
from mendflow.remediation import Action, FailureClass, Ledger, Situation, decide, diagnose
from mendflow.remediation.escalation import WebhookNotifier
from mendflow.remediation.playbook import DEFAULT_PLAYBOOK
from mendflow.remediation.supervisor import Healing, run_healing
from mendflow.testing import FakeClock


@pytest.mark.parametrize(
    ("error", "expected", "action"),
    [
        (SourceUnavailable("503", status=503), FailureClass.TRANSIENT,
         Action.RESTART_FROM_CHECKPOINT),
        (DestinationUnavailable("locked"), FailureClass.TRANSIENT, Action.RESTART_FROM_CHECKPOINT),
        (RateLimited("429", retry_after_s=3), FailureClass.RATE_LIMITED,
         Action.WAIT_FOR_DEPENDENCY),
        (DependencyDown("open", retry_after_s=9), FailureClass.DEPENDENCY_DOWN,
         Action.WAIT_FOR_DEPENDENCY),
        (ResourceExhausted("oom"), FailureClass.RESOURCE_EXHAUSTED, Action.SHRINK_BATCH),
        (MemoryError(), FailureClass.RESOURCE_EXHAUSTED, Action.SHRINK_BATCH),
        (BadData("rows"), FailureClass.BAD_DATA, Action.ESCALATE),
        (SchemaMismatch("col"), FailureClass.SCHEMA_DRIFT, Action.ESCALATE),
        (SourceRejected("401", status=401), FailureClass.PERMANENT, Action.ESCALATE),
        (TransformError("bug"), FailureClass.PERMANENT, Action.ESCALATE),
        (ConfigError("typo"), FailureClass.CONFIG, Action.ESCALATE),
        (ValueError("?"), FailureClass.BUG, Action.ESCALATE),
    ],
)
def test_each_failure_class_meets_its_action(
    error: BaseException, expected: FailureClass, action: Action
) -> None:
    """Diagnosis goes by type; the default playbook maps each class to one action."""
    diagnosis = diagnose(error)
    assert diagnosis.failure_class is expected
    assert decide(DEFAULT_PLAYBOOK, Situation(diagnosis, 0, batch_size=100_000)) is action


def test_a_custom_rule_goes_first() -> None:
    """A playbook is an ordered tuple: a rule put in front overrides the defaults."""
    def never_restart(_: Situation) -> Action:
        return Action.ESCALATE

    situation = Situation(diagnose(SourceUnavailable("x")), 0)
    assert decide((never_restart, *DEFAULT_PLAYBOOK), situation) is Action.ESCALATE


class _Receiver:
    """A real webhook endpoint on 127.0.0.1 that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        bodies: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.bodies = bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/secret-token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    """A webhook receiver, stopped after the test."""
    hook = _Receiver()
    yield hook
    hook.close()


def _api_pipeline(url: str, db: Path, attempts: int = 2) -> Pipeline:
    return Pipeline(
        name="api",
        source=HttpSource(
            f"{url}/orders", records_path="data",
            pagination=Pagination(kind="cursor", cursor_param="cursor", cursor_path="next_cursor"),
            incremental_field="updated_at", incremental_param="updated_since",
            params={"limit": "100"}, timeout_s=2, retry=Retry(attempts=attempts, base_s=0.001),
        ),
        destination=DuckDBSink(db, table="orders"),
        write_mode="merge", primary_key="id",
    )


def _count(db: Path) -> tuple[int, int]:
    con = duckdb.connect(str(db), read_only=True)
    row = con.execute("SELECT count(*), count(DISTINCT id) FROM orders").fetchone()
    con.close()
    assert row is not None
    return int(row[0]), int(row[1])


def test_an_outage_longer_than_the_call_retries_heals_by_restarting(
    tmp_path: Path, receiver: _Receiver
) -> None:
    """A 503 burst beats the request's retries; the run restarts from its checkpoint and heals."""
    store = StateStore(f"sqlite:///{tmp_path / 's.db'}")
    clock = FakeClock()
    with OrdersApi(orders=300, faults={2: "503", 3: "503", 4: "503"}) as api:
        result = run_healing(_api_pipeline(api.url, tmp_path / "d.duckdb"), store=store,
                             notifiers=[WebhookNotifier(receiver.url)], clock=clock)
    assert result.rows_loaded == 200  # the restarted run loads what the first did not
    assert _count(tmp_path / "d.duckdb") == (300, 300)
    [incident] = Ledger(store).incidents(pipeline="api")
    assert (incident["status"], incident["escalated"]) == ("healed", False)
    assert incident["failure_class"] == "transient"
    assert incident["evidence"]["status"] == 503
    steps = [(a["action"], a["outcome"]) for a in incident["actions"]]
    assert steps == [  # 2 attempts per request: the retry, then the restart, then the retry
        ("retry", "tried"), ("restart_from_checkpoint", "tried"), ("retry", "tried"),
        ("retry", "succeeded"), ("verify", "succeeded"),
    ]
    assert incident["recovered_at"] >= incident["detected_at"]
    assert receiver.bodies == []
    assert len(clock.sleeps) == 1
    store.close()


def test_a_rate_limit_waits_as_long_as_the_server_asks(tmp_path: Path) -> None:
    """A 429 that outlasts the request's retries: healing waits its Retry-After, then resumes."""
    store = StateStore(f"sqlite:///{tmp_path / 's.db'}")
    clock = FakeClock()
    with OrdersApi(orders=50, faults={1: "429:7"}) as api:
        run_healing(_api_pipeline(api.url, tmp_path / "d.duckdb", attempts=1), store=store,
                    clock=clock)
    assert clock.sleeps == [7.0]
    [incident] = Ledger(store).incidents()
    assert incident["failure_class"] == "rate_limited"
    assert incident["actions"][0]["action"] == "wait_for_dependency"
    store.close()


def test_a_permanent_failure_pages_once_per_incident_and_resolves_later(
    tmp_path: Path, receiver: _Receiver
) -> None:
    """A 401 escalates at once; the next failing run does not page again; success resolves it."""
    store = StateStore(f"sqlite:///{tmp_path / 's.db'}")
    db = tmp_path / "d.duckdb"
    notifiers = [WebhookNotifier(receiver.url)]
    for _ in range(2):
        with OrdersApi(orders=10, faults={1: "401"}) as api, pytest.raises(SourceRejected):
            run_healing(_api_pipeline(api.url, db), store=store, notifiers=notifiers,
                        clock=FakeClock())
    assert [b["mendflow"]["kind"] for b in receiver.bodies] == ["escalated"]
    assert "ESCALATED mendflow api: permanent" in receiver.bodies[0]["text"]
    with OrdersApi(orders=10) as api:
        run_healing(_api_pipeline(api.url, db), store=store, notifiers=notifiers,
                    clock=FakeClock())
    assert [b["mendflow"]["kind"] for b in receiver.bodies] == ["escalated", "resolved"]
    [incident] = Ledger(store).incidents()
    assert [a["outcome"] for a in incident["actions"]] == ["paged", "already_paged", "succeeded"]
    assert incident["status"] == "healed"
    store.close()


def test_healing_that_never_works_stops_at_the_budget_and_pages_once(
    tmp_path: Path, receiver: _Receiver
) -> None:
    """An endless outage: a bounded number of restarts, then one page, then the error."""
    store = StateStore(f"sqlite:///{tmp_path / 's.db'}")
    faults = dict.fromkeys(range(1, 200), "503")
    with OrdersApi(orders=10, faults=faults) as api, pytest.raises(SourceUnavailable):
        run_healing(_api_pipeline(api.url, tmp_path / "d.duckdb"), store=store,
                    healing=Healing(max_actions=3), notifiers=[WebhookNotifier(receiver.url)],
                    clock=FakeClock())
    [incident] = Ledger(store).incidents()
    actions = [a["action"] for a in incident["actions"]]
    assert [a for a in actions if a != "retry"] == [
        "restart_from_checkpoint", "restart_from_checkpoint", "restart_from_checkpoint",
        "escalate",
    ]
    assert actions.count("retry") == 4  # one retry per run: 2 attempts per request
    assert len(receiver.bodies) == 1
    store.close()


def test_memory_exhaustion_shrinks_the_batch_until_it_fits(tmp_path: Path) -> None:
    """Out of memory on big batches: healing halves the batch size and the load completes."""
    folder = tmp_path / "drops"
    folder.mkdir()
    (folder / "a.jsonl").write_text(
        "".join(json.dumps({"id": i}) + "\n" for i in range(5000)), encoding="utf-8"
    )

    def needs_small_batches(table: pa.Table) -> pa.Table:
        if table.num_rows > 1500:
            raise ResourceExhausted("batch too large for the memory left")
        return table

    pipeline = Pipeline(
        name="files", source=FileSource(str(folder / "*.jsonl"), batch_size=4000),
        destination=DuckDBSink(tmp_path / "d.duckdb", table="orders"),
        transforms=[needs_small_batches],
    )
    store = StateStore(f"sqlite:///{tmp_path / 's.db'}")
    run_healing(pipeline, store=store, clock=FakeClock())
    assert _count(tmp_path / "d.duckdb") == (5000, 5000)
    [incident] = Ledger(store).incidents()
    details = [a["detail"] for a in incident["actions"] if a["action"] == "shrink_batch"]
    assert details == ["batch_size 4000 -> 2000", "batch_size 2000 -> 1000"]
    store.close()
