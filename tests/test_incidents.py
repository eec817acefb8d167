"""Incidents end to end: a scripted API on 127.0.0.1, DuckDB files, a SQLite state store.

Each failure class meets its action and lands in the ledger with its outcome; a circuit breaker
opens, fails fast, probes and closes, and is shared by worker processes; a human is paged once
per incident that did not heal; ``mendflow slo`` reports what the ledger holds. A FakeClock makes
backoff, Retry-After and open breakers cost no wall time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pytest

from mendflow import (
    DependencyDown,
    DuckDBSink,
    HttpSource,
    MendflowError,
    Pagination,
    Pipeline,
    Retry,
    RunResult,
    SourceRejected,
    SourceUnavailable,
    StateStore,
)
from mendflow.demo._api import OrdersApi
from mendflow.events import (
    BatchQuarantined,
    BreakerChanged,
    Event,
    Recovered,
    RetryScheduled,
    RunFailed,
)
from mendflow.remediation import Ledger
from mendflow.remediation.diagnosis import Diagnosis, FailureClass
from mendflow.remediation.escalation import WebhookNotifier
from mendflow.remediation.playbook import Action
from mendflow.remediation.supervisor import Healing, run_healing
from mendflow.resilience.breaker import BreakerPolicy, BreakerState
from mendflow.state.breakers import SqlBreakerStore
from mendflow.state.schema import incident_actions
from mendflow.testing import EventLog, FakeClock
from tests import healing_child
from tests.conftest import WebhookReceiver

CHILD = Path(__file__).with_name("healing_child.py")
OPEN, CLOSED = BreakerState.OPEN, BreakerState.CLOSED
HEALING = Healing(max_actions=6, window_s=3600.0, cooldown_s=1.0)
_E = TypeVar("_E", bound=Event)

#: The orders API's amounts run from 5 to 500; with its seed, two of five pages of 100 orders
#: hold an amount above this, and the table below refuses them.
AMOUNT_LIMIT = 498.6
ORDERS_DDL = (
    "CREATE TABLE orders (id BIGINT, updated_at VARCHAR, customer VARCHAR, amount DOUBLE, "
    f"qty BIGINT, status VARCHAR, CHECK (amount <= {AMOUNT_LIMIT}))"
)


@dataclass
class _World:
    """What a test's runs share: a folder, a state store, a fake clock, a webhook receiver."""

    folder: Path
    store: StateStore
    clock: FakeClock
    webhook: WebhookReceiver

    @property
    def state_url(self) -> str:
        return f"sqlite:///{self.folder / 'state.db'}"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[_World]:
    """A fresh state store, fake clock and webhook receiver, closed after the test."""
    webhook = WebhookReceiver()
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    yield _World(tmp_path, store, FakeClock(), webhook)
    store.close()
    webhook.close()


@dataclass
class _Run:
    """One ``run_healing`` call: its API (and its log), the events, the waits, how it ended."""

    pipeline: str
    api: OrdersApi
    events: EventLog
    #: (previous, state, requests the API had served) at each breaker change.
    changes: list[tuple[str, str, int]] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    result: RunResult | None = None
    error: MendflowError | None = None

    def of(self, kind: type[_E]) -> list[_E]:
        return [e for e in self.events if isinstance(e, kind)]

    def incidents(self, world: _World) -> list[dict[str, Any]]:
        return Ledger(world.store).incidents(pipeline=self.pipeline)


def _pipeline(
    world: _World, api: OrdersApi, name: str, *, attempts: int = 3,
    breaker: BreakerPolicy | None = BreakerPolicy(),  # noqa: B008 - frozen
    **options: Any,
) -> Pipeline:
    source = HttpSource(
        f"{api.url}/orders", records_path="data",
        pagination=Pagination(kind="cursor", cursor_param="cursor", cursor_path="next_cursor"),
        incremental_field="updated_at", incremental_param="updated_since",
        params={"limit": "100"}, timeout_s=2, retry=Retry(attempts=attempts, base_s=0.001),
        breaker=breaker, clock=world.clock, name=f"orders-api-{name}",
    )
    return Pipeline(
        name=name, source=source, write_mode="merge", primary_key="id",
        destination=DuckDBSink(world.folder / f"{name}.duckdb", table="orders"), **options,
    )


def _heal(world: _World, api: OrdersApi, pipeline: Pipeline) -> _Run:
    """Run under healing with every event captured; a raised error is kept, not raised."""
    run = _Run(pipeline.name, api, EventLog())

    def on_change(event: Event) -> None:
        if isinstance(event, BreakerChanged):
            run.changes.append((event.previous, event.state, len(api.log)))

    before = len(world.clock.sleeps)
    try:
        run.result = run_healing(
            pipeline, store=world.store, healing=HEALING, clock=world.clock,
            notifiers=[WebhookNotifier(world.webhook.url)], hooks=[run.events, on_change],
        )
    except MendflowError as exc:
        run.error = exc
    run.sleeps = world.clock.sleeps[before:]
    return run


def _steps(incident: dict[str, Any], *, retries: bool = False) -> list[tuple[str, str]]:
    return [(a["action"], a["outcome"]) for a in incident["actions"]
            if retries or a["action"] != Action.RETRY]


# -- the scenarios: one per failure class, each on its own pipeline -----------------------------


def _lone_503(world: _World) -> _Run:
    with OrdersApi(orders=300, faults={2: "503"}) as api:
        return _heal(world, api, _pipeline(world, api, "lone-503"))


def _rate_limited(world: _World) -> _Run:
    with OrdersApi(orders=300, faults={2: "429:7"}) as api:
        return _heal(world, api, _pipeline(world, api, "rate-limited"))


def _burst(world: _World, probes: int = 1) -> _Run:
    """Three 503s in a row: the fourth call of a four-call window opens the breaker."""
    policy = BreakerPolicy(window=4, min_calls=4, open_s=30.0, half_open_probes=probes)
    with OrdersApi(orders=300, faults=dict.fromkeys((2, 3, 4), "503")) as api:
        pipeline = _pipeline(world, api, f"burst-{probes}", attempts=6, breaker=policy)
        return _heal(world, api, pipeline)


def _unauthorized(world: _World) -> _Run:
    with OrdersApi(orders=50, faults={1: "401"}) as api:
        return _heal(world, api, _pipeline(world, api, "unauthorized"))


def _bad_batches(world: _World) -> _Run:
    """500 orders into a table whose CHECK constraint two of the five pages break."""
    con = duckdb.connect(str(world.folder / "bad-batches.duckdb"))
    con.execute(ORDERS_DDL)
    con.close()
    with OrdersApi(orders=500) as api:
        # A refused batch is not retried (BadData is permanent); were it taken for a transient
        # failure, two attempts keep that mistake short.
        pipeline = _pipeline(world, api, "bad-batches",
                             destination_retry=Retry(attempts=2, base_s=0.001))
        return _heal(world, api, pipeline)


HEALED: tuple[Callable[[_World], _Run], ...] = (_lone_503, _rate_limited, _burst)
SCENARIOS: tuple[Callable[[_World], _Run], ...] = (*HEALED, _unauthorized, _bad_batches)


# -- each failure class meets its action ---------------------------------------------------------


def test_a_lone_503_is_retried_within_the_run_and_heals(world: _World) -> None:
    """One 503: the request's retry succeeds; the incident heals without paging anyone."""
    run = _lone_503(world)
    assert run.error is None
    assert run.result is not None
    assert run.result.rows_loaded == 300
    assert [s.status for s in run.api.log] == [200, 503, 200, 200]
    [incident] = run.incidents(world)
    assert (incident["status"], incident["escalated"]) == ("healed", False)
    assert (incident["failure_class"], incident["evidence"]["status"]) == ("transient", 503)
    assert _steps(incident, retries=True) == [("retry", "tried"), ("retry", "succeeded")]
    assert incident["recovered_at"] >= incident["detected_at"]
    assert len(run.sleeps) == 1
    assert run.changes == []
    assert world.webhook.bodies == []


def test_a_rate_limit_waits_its_retry_after_on_the_fake_clock(world: _World) -> None:
    """A 429 with Retry-After: 7: the retry waits exactly 7 s of fake time, then succeeds."""
    run = _rate_limited(world)
    assert run.error is None
    assert run.sleeps == [7.0]
    assert [s.status for s in run.api.log] == [200, 429, 200, 200]
    [incident] = run.incidents(world)
    assert incident["failure_class"] == "rate_limited"
    assert incident["evidence"]["status"] == 429
    assert _steps(incident, retries=True) == [("retry", "tried"), ("retry", "succeeded")]
    assert "retrying in 7.00s" in incident["actions"][0]["detail"]
    assert incident["recovered_at"] - incident["detected_at"] == pytest.approx(7.0)
    assert world.webhook.bodies == []


@pytest.mark.parametrize(
    "probes",
    [
        1,
        2,
    ],
)
def test_a_503_burst_opens_the_breaker_which_fails_fast_probes_and_closes(
    world: _World, probes: int
) -> None:
    """A burst opens the breaker; no request is sent while it is open; after open_s the probes
    succeed, it closes, and the ledger tells that story on one healed incident."""
    run = _burst(world, probes)
    assert run.error is None
    assert run.result is not None
    assert run.result.rows_loaded == 300
    [(_, opened, at_open), (_, half_open, at_half_open), (_, closed, at_close)] = run.changes
    assert (opened, half_open, closed) == ("open", "half_open", "closed")
    assert at_open == 4  # the 4th request, the 3rd 503, filled the window
    assert at_half_open == at_open  # nothing reached the server while the breaker was open
    assert at_close == at_open + probes
    retries = run.of(RetryScheduled)
    refused = [r for r in retries if r.error_type == "DependencyDown"]
    assert len(refused) >= 1
    assert refused[0].delay_s == pytest.approx(30.0, abs=0.1)
    assert len(run.api.log) == 3 + len(retries) - len(refused)  # pages + attempts that went out
    assert run.sleeps[-1] == pytest.approx(30.0, abs=0.1)
    [incident] = run.incidents(world)
    assert (incident["status"], incident["escalated"]) == ("healed", False)
    assert _steps(incident) == [
        (Action.CIRCUIT_BREAKER, "tried"), (Action.PROBE, "tried"),
        (Action.CIRCUIT_BREAKER, "succeeded"),
    ]
    assert _steps(incident, retries=True).count(("retry", "tried")) == len(retries)
    assert incident["recovered_at"] - incident["detected_at"] == pytest.approx(30.0, abs=0.1)
    assert world.webhook.bodies == []


def test_a_401_escalates_at_once_with_one_page_and_no_retry(world: _World) -> None:
    """A permanent failure is neither retried nor restarted: one request, one page, raised."""
    run = _unauthorized(world)
    assert isinstance(run.error, SourceRejected)
    assert [s.status for s in run.api.log] == [401]
    assert run.sleeps == []
    [incident] = run.incidents(world)
    assert (incident["status"], incident["escalated"]) == ("escalated", True)
    assert incident["failure_class"] == "permanent"
    assert _steps(incident, retries=True) == [("escalate", "paged")]
    assert incident["recovered_at"] is None
    assert [b["mendflow"]["kind"] for b in world.webhook.bodies] == ["escalated"]
    assert world.webhook.pages() == {incident["incident_id"]: 1}


def test_batches_breaking_a_check_constraint_are_quarantined_and_nothing_is_lost(
    world: _World,
) -> None:
    """Pages the table refuses go whole to the dead letters; the others load; table rows and
    dead letters together are exactly the orders the API served."""
    run = _bad_batches(world)
    assert run.error is None, run.error
    served = run.api.records
    pages = [served[n : n + 100] for n in range(0, len(served), 100)]
    refused = {o["id"] for page in pages if max(o["amount"] for o in page) > AMOUNT_LIMIT
               for o in page}
    assert 0 < len(refused) < len(served)
    con = duckdb.connect(str(world.folder / "bad-batches.duckdb"), read_only=True)
    loaded = [r[0] for r in con.execute("SELECT id FROM orders").fetchall()]
    dead = con.execute("SELECT batch_id, stage, record FROM _mendflow_dead_letters").fetchall()
    con.close()
    dead_ids = [json.loads(record)["id"] for _, _, record in dead]
    assert sorted(dead_ids) == sorted(refused)
    assert {stage for _, stage, _ in dead} == {"quarantine"}
    assert {batch for batch, _, _ in dead} == {e.batch_id for e in run.of(BatchQuarantined)}
    assert len(loaded) + len(dead_ids) == len(served)
    assert set(loaded) | set(dead_ids) == {o["id"] for o in served}
    incidents = run.incidents(world)
    assert len(incidents) == 2  # one per refused page
    for incident in incidents:
        assert (incident["status"], incident["failure_class"]) == ("healed", "bad_data")
        assert _steps(incident) == [
            ("quarantine", "tried"), ("quarantine", "succeeded"), ("verify", "succeeded"),
        ]
    assert world.webhook.bodies == []


# -- the breaker against the real server, in one process and across two -------------------------


def test_the_breaker_opens_fails_fast_half_opens_and_closes_against_the_real_server(
    world: _World,
) -> None:
    """Three failed runs open it; while open a run fails fast and sends nothing; after open_s on
    the fake clock two probe requests close it; the changes come in order and are stored."""
    policy = BreakerPolicy(window=3, min_calls=3, open_s=60.0, half_open_probes=2)
    events = EventLog()
    with OrdersApi(orders=300, faults=dict.fromkeys((1, 2, 3), "503")) as api:
        pipeline = _pipeline(world, api, "lifecycle", attempts=1, breaker=policy)
        breaker = world.store.breakers(world.clock).get(pipeline.source.name, policy)

        def run() -> RunResult:
            return pipeline.run(hooks=[events], state=world.store, clock=world.clock)

        for served in (1, 2, 3):
            with pytest.raises(SourceUnavailable):
                run()
            assert len(api.log) == served
        assert breaker.state is OPEN
        for waited, left in ((0.0, 60.0), (59.5, 0.5)):
            world.clock.advance(waited)
            with pytest.raises(DependencyDown) as down:
                run()
            assert down.value.retry_after_s == pytest.approx(left)
            assert down.value.dependency == pipeline.source.name
            assert len(api.log) == 3  # failed fast: no request reached the server
        world.clock.advance(0.5)
        result = run()
    assert result.rows_loaded == 300
    assert [s.status for s in api.log] == [503, 503, 503, 200, 200, 200]
    assert breaker.state is CLOSED
    changes = [(e.previous, e.state) for e in events if isinstance(e, BreakerChanged)]
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    stored = SqlBreakerStore(world.store.engine).load(pipeline.source.name)
    assert stored is not None
    assert (stored.state, stored.version) == (CLOSED, 3)


def test_a_breaker_opened_by_one_worker_process_fails_fast_in_another(world: _World) -> None:
    """Worker A opens the source's breaker against an API that only answers 503; worker B, a
    second process on the same state store, fails fast without sending a request."""
    with OrdersApi(orders=50, faults=dict.fromkeys(range(1, 50), "503")) as api:
        first = _worker(world, api, "a.duckdb")
        assert len(api.log) == healing_child.POLICY.min_calls
        second = _worker(world, api, "b.duckdb")
        assert len(api.log) == healing_child.POLICY.min_calls  # B sent nothing
    assert first["error"] == second["error"] == "DependencyDown"
    assert 0 < second["retry_after_s"] <= first["retry_after_s"] <= healing_child.POLICY.open_s
    stored = SqlBreakerStore(world.store.engine).load(healing_child.DEPENDENCY)
    assert stored is not None
    assert stored.state is OPEN


def _worker(world: _World, api: OrdersApi, db: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(CHILD), world.state_url, api.url, str(world.folder / db)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    outcome: dict[str, Any] = json.loads(done.stdout)
    return outcome


# -- the record: every incident, one page per unhealed one, and the KPIs -------------------------


def test_every_incident_is_on_record_and_only_the_unhealed_are_paged_once(
    world: _World,
) -> None:
    """All scenarios on one state store: each incident has its actions and outcomes; each one
    that did not heal paged exactly once, the healed never."""
    runs = _run_all(world, SCENARIOS)
    incidents = Ledger(world.store).incidents(limit=1_000)
    assert {i["pipeline"] for i in incidents} == set(runs)
    for incident in incidents:
        assert incident["actions"], incident
        assert all(a["outcome"] in _OUTCOMES for a in incident["actions"]), incident
        assert incident["escalated"] is (incident["status"] == "escalated")
        assert (incident["recovered_at"] is None) is (incident["status"] != "healed")
    unhealed = {i["incident_id"] for i in incidents if i["status"] != "healed"}
    assert unhealed  # the 401 at least
    assert world.webhook.pages() == dict.fromkeys(unhealed, 1)
    assert world.webhook.pages("resolved") == {}


@pytest.mark.parametrize(
    "scenarios",
    [
        pytest.param(HEALED, id="all-healed"),
        pytest.param(SCENARIOS, id="with-escalations"),
    ],
)
def test_mendflow_slo_reports_what_the_ledger_holds(
    world: _World, scenarios: tuple[Callable[[_World], _Run], ...]
) -> None:
    """`mendflow slo --json` gives each pipeline the incident counts, auto-heal rate, MTTR and
    retries computed by hand from ``Ledger.incidents()`` and the runs' events."""
    runs = _run_all(world, scenarios)
    incidents = Ledger(world.store).incidents(limit=1_000)
    levels = {lv["pipeline"]: lv for lv in _slo(world)}
    assert set(levels) == set(runs)
    for name, run in runs.items():
        expected = _by_hand(name, incidents, run) | _KNOWN.get(name, {})
        assert {k: levels[name][k] for k in expected} == pytest.approx(expected, abs=0.1), name


def _run_all(
    world: _World, scenarios: tuple[Callable[[_World], _Run], ...]
) -> dict[str, _Run]:
    return {run.pipeline: run for run in (scenario(world) for scenario in scenarios)}


#: What the scenarios make of the KPIs, stated independently of the ledger.
_KNOWN: dict[str, dict[str, Any]] = {
    "lone-503": {"incidents": 1, "open_incidents": 0, "auto_heal_rate": 1.0},
    "rate-limited": {"incidents": 1, "mttr_s": 7.0, "retries": 1, "retry_success_rate": 1.0},
    "burst-1": {"incidents": 1, "open_incidents": 0, "mttr_s": 30.0},
    "unauthorized": {"incidents": 1, "open_incidents": 1, "auto_heal_rate": 0.0,
                     "mttr_s": None, "retries": 0},
}
_OUTCOMES = {"tried", "succeeded", "paged", "already_paged"}


def _by_hand(pipeline: str, incidents: list[dict[str, Any]], run: _Run) -> dict[str, Any]:
    """The ledger's KPIs of ``pipeline`` computed from ``Ledger.incidents()`` and its events."""
    mine = [i for i in incidents if i["pipeline"] == pipeline]
    ended = [i for i in mine if i["recovered_at"] is not None or i["escalated"]]
    healed = [i["recovered_at"] - i["detected_at"] for i in mine if i["recovered_at"] is not None]
    recovered = len(run.of(Recovered))
    failed = sum(1 for e in run.of(RunFailed) if e.retryable)
    return {
        "incidents": len(mine),
        "open_incidents": sum(1 for i in mine if i["recovered_at"] is None),
        "auto_heal_rate": (sum(1 for i in ended if not i["escalated"]) / len(ended)
                           if ended else None),
        "mttr_s": sum(healed) / len(healed) if healed else None,
        "retries": len(run.of(RetryScheduled)),
        "retry_success_rate": recovered / (recovered + failed) if recovered + failed else None,
    }


def _slo(world: _World) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "mendflow", "slo", "--json", "--state", world.state_url],
        cwd=world.folder, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    levels: list[dict[str, Any]] = json.loads(done.stdout)
    return levels


def test_a_restart_late_in_a_long_incident_waits_the_capped_backoff(world: _World) -> None:
    """An outage whose incident already holds 1,100 in-run retries: the next restart from the
    checkpoint waits at most the restart backoff's cap, and the run heals."""
    with OrdersApi(orders=100, faults={1: "503", 2: "503"}) as api:
        pipeline = _pipeline(world, api, "long-outage", attempts=2)
        _long_incident(world, "long-outage", pipeline.source.name, retries=1_100)
        run = _heal(world, api, pipeline)
    assert run.error is None
    assert [s.status for s in api.log] == [503, 503, 200]
    assert max(run.sleeps) <= Healing().backoff.cap_s
    [incident] = run.incidents(world)
    assert incident["status"] == "healed"
    assert _steps(incident) == [("restart_from_checkpoint", "tried"), ("verify", "succeeded")]


def _long_incident(world: _World, pipeline: str, dependency: str, *, retries: int) -> None:
    ledger = Ledger(world.store)
    diagnosis = Diagnosis(FailureClass.TRANSIENT, dependency, "SourceUnavailable", 503, "503")
    incident = ledger.open(pipeline=pipeline, run_id="", diagnosis=diagnosis,
                           at=world.clock.now())
    row = {"incident_id": incident.incident_id, "action": "retry", "outcome": "tried",
           "detail": "attempt 1 failed (SourceUnavailable)", "at": world.clock.now()}
    with world.store.engine.begin() as con:
        con.execute(incident_actions.insert(), [row] * retries)
