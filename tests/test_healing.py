"""Healing: each failure class meets its action; the ledger records it; a human is paged once."""

from __future__ import annotations

import json
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
from mendflow.events import BatchLoaded, BatchRead, BreakerChanged, RunStarted
from mendflow.exceptions import (
    BadData,
    ConfigError,
    DependencyDown,
    TransformError,
    TransientError,
)
from mendflow.remediation import Action, FailureClass, Ledger, Situation, decide, diagnose
from mendflow.remediation.escalation import WebhookNotifier
from mendflow.remediation.playbook import DEFAULT_PLAYBOOK
from mendflow.remediation.supervisor import Healing, run_healing
from mendflow.resilience.breaker import BreakerPolicy
from mendflow.testing import EventLog, FakeClock
from tests.conftest import WebhookReceiver


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


def test_a_batch_context_turns_bad_data_into_quarantine_and_failed_writes_into_rollback() -> None:
    """With the failing batch known, bad data is quarantined and a failed write rolled back."""
    bad = decide(DEFAULT_PLAYBOOK, Situation(diagnose(BadData("check")), 0, batch_id="b7",
                                             stage="write"))
    assert bad is Action.QUARANTINE
    locked = diagnose(DestinationUnavailable("locked"))
    assert decide(DEFAULT_PLAYBOOK, Situation(locked, 0, batch_id="b7", stage="write")) is (
        Action.ROLLBACK
    )
    assert decide(DEFAULT_PLAYBOOK, Situation(locked, 0, stage="prepare")) is (
        Action.RESTART_FROM_CHECKPOINT
    )


def test_a_custom_rule_goes_first() -> None:
    """A playbook is an ordered tuple: a rule put in front overrides the defaults."""
    def never_restart(_: Situation) -> Action:
        return Action.ESCALATE

    situation = Situation(diagnose(SourceUnavailable("x")), 0)
    assert decide((never_restart, *DEFAULT_PLAYBOOK), situation) is Action.ESCALATE


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
    tmp_path: Path, receiver: WebhookReceiver
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
    tmp_path: Path, receiver: WebhookReceiver
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
    tmp_path: Path, receiver: WebhookReceiver
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


class _FlakySink:
    """A real DuckDB sink whose writes number ``fail`` raise DestinationUnavailable."""

    def __init__(self, path: Path, fail: set[int]) -> None:
        self.inner = DuckDBSink(path, table="orders")
        self.name = "warehouse"
        self.fail = fail
        self.writes = 0

    def position(self, pipeline: str, *, mode: str = "append") -> dict[str, Any]:
        return self.inner.position(pipeline, mode=mode)

    def write(self, load: Any, *, on_staged: Any = lambda: None) -> Any:
        self.writes += 1
        if self.writes in self.fail:
            raise DestinationUnavailable("the warehouse is restarting", dependency=self.name)
        return self.inner.write(load, on_staged=on_staged)

    def finish(self, pipeline: str, *, mode: str = "append") -> None:
        self.inner.finish(pipeline, mode=mode)

    def close(self) -> None:
        self.inner.close()


def _drops(tmp_path: Path, rows: int = 5000) -> Path:
    folder = tmp_path / "drops"
    folder.mkdir(exist_ok=True)
    (folder / "a.jsonl").write_text(
        "".join(json.dumps({"id": i, "v": i * 2}) + "\n" for i in range(rows)), encoding="utf-8"
    )
    return folder


def test_a_destination_that_goes_down_holds_the_batch_until_a_probe_succeeds(
    tmp_path: Path,
) -> None:
    """Writes 3-8 fail: the breaker opens after three, the batch is held (not dropped, not
    read again), probes go out every open_s, and the run ends in one go with every row."""
    folder = _drops(tmp_path)
    sink = _FlakySink(tmp_path / "d.duckdb", fail=set(range(3, 9)))
    policy = BreakerPolicy(window=3, min_calls=3, failure_rate=1.0, open_s=5.0,
                           half_open_probes=1)
    pipeline = Pipeline(
        name="held", source=FileSource(str(folder / "*.jsonl"), batch_size=1000),
        destination=sink, destination_breaker=policy,
        destination_retry=Retry(attempts=100, base_s=0.01, cap_s=0.01, deadline_s=600),
    )
    store, clock, log = StateStore(f"sqlite:///{tmp_path / 's.db'}"), FakeClock(), EventLog()
    started = clock.now()
    result = pipeline.run(state=store, clock=clock, hooks=[log])
    assert (result.rows_loaded, result.batches) == (5000, 5)
    assert _count(tmp_path / "d.duckdb") == (5000, 5000)
    moves = [(e.previous, e.state) for e in log if isinstance(e, BreakerChanged)]
    # three failures open it; each probe fails until write 9, and the breaker closes
    assert moves == [("closed", "open"), ("open", "half_open"), ("half_open", "open"),
                     ("open", "half_open"), ("half_open", "open"), ("open", "half_open"),
                     ("half_open", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert sink.writes == 5 + 6  # no write was attempted while the breaker was open
    assert clock.now() - started >= 4 * 5.0
    assert [e.batch_id for e in log if isinstance(e, BatchRead)] == [
        e.batch_id for e in log if isinstance(e, BatchLoaded)]  # each batch read once
    [incident] = Ledger(store).incidents(pipeline="held")
    assert (incident["status"], incident["dependency"]) == ("healed", "warehouse")
    outcomes = {(a["action"], a["outcome"]) for a in incident["actions"]}
    assert {("circuit_breaker", "tried"), ("probe", "tried"),
            ("circuit_breaker", "succeeded")} <= outcomes
    store.close()


def test_the_budget_is_per_pipeline_per_window_with_a_cooldown(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """An endless outage: two actions at least cooldown_s apart, then one page; an hour later
    the budget is back, but the same incident does not page again."""
    store, clock = StateStore(f"sqlite:///{tmp_path / 's.db'}"), FakeClock()
    healing = Healing(max_actions=2, window_s=3600, cooldown_s=30,
                      backoff=Retry(base_s=0.001, cap_s=0.001))
    notifiers = [WebhookNotifier(receiver.url)]
    with OrdersApi(orders=10, faults=dict.fromkeys(range(1, 500), "503")) as api:
        pipeline = _api_pipeline(api.url, tmp_path / "d.duckdb")
        log = EventLog()
        with pytest.raises(TransientError):  # at last the breaker opens too
            run_healing(pipeline, store=store, healing=healing, notifiers=notifiers,
                        clock=clock, hooks=[log])
        [incident] = Ledger(store).incidents()
        budgeted = [a for a in incident["actions"] if a["action"] == "restart_from_checkpoint"]
        assert len(budgeted) == 2
        starts = [e.at for e in log if isinstance(e, RunStarted)]
        assert len(starts) == 3
        assert starts[2] >= budgeted[0]["at"] + 30  # the cooldown between the two actions
        clock.advance(10)  # still inside the window: escalates at once, no action taken
        with pytest.raises(TransientError):  # at last the breaker opens too
            run_healing(pipeline, store=store, healing=healing, notifiers=notifiers,
                        clock=clock)
        [incident] = Ledger(store).incidents()
        assert len([a for a in incident["actions"]
                    if a["action"] == "restart_from_checkpoint"]) == 2
        clock.advance(3600)  # a new window: healing tries again, then gives up again
        with pytest.raises(TransientError):  # at last the breaker opens too
            run_healing(pipeline, store=store, healing=healing, notifiers=notifiers,
                        clock=clock)
    [incident] = Ledger(store).incidents()
    kinds = {"restart_from_checkpoint", "wait_for_dependency"}
    assert len([a for a in incident["actions"] if a["action"] in kinds]) == 4
    assert [b["mendflow"]["kind"] for b in receiver.bodies] == ["escalated"]  # paged once
    store.close()
