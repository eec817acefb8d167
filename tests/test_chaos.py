"""Chaos: seeded fault plans, each injector on a fake clock, and ``mendflow chaos`` end to end
over DuckDB and PostgreSQL, including a broken sink the checker must catch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from mendflow.batch import Load
from mendflow.chaos import (
    FAULT_KINDS,
    Fault,
    FaultPlan,
    FaultySink,
    FaultySource,
    FaultyTransport,
    Journal,
)
from mendflow.chaos.source import clear
from mendflow.cli import main
from mendflow.exceptions import (
    ConfigError,
    DestinationUnavailable,
    RateLimited,
    SourceRejected,
    SourceUnavailable,
)
from mendflow.sources.http import HttpSource, Pagination
from mendflow.testing import FakeClock, MemorySource
from tests.chaos_helpers import ListSink, pipeline_file, write_drops

SEEDS = 25


def _pages(n: int = 4, rows: int = 3) -> MemorySource:
    return MemorySource([[{"id": p * rows + i, "amount": f"{i}.5"} for i in range(rows)]
                         for p in range(n)])


def _drain(source: FaultySource) -> list[Any]:
    """Read to the end from the start, retrying after each injected error, as healing would."""
    errors: list[Any] = []
    for _ in range(10):
        try:
            return [*errors, list(source.read({}))]
        except (SourceUnavailable, RateLimited) as exc:
            errors.append(exc)
        except SourceRejected as exc:  # a human renews the credentials
            errors.append(exc)
            clear(source.journal, source.plan)
    raise AssertionError("the source never finished")


def test_the_same_seed_draws_the_same_plan() -> None:
    """A seed names one schedule: drawn twice, it is equal; another seed differs."""
    assert FaultPlan.from_seed(7) == FaultPlan.from_seed(7)
    assert FaultPlan.from_seed(7) != FaultPlan.from_seed(8)


def test_consecutive_seeds_cover_every_kind_within_bounds() -> None:
    """As many consecutive seeds as kinds hold every kind; a plan has each kind at most once,
    at most max_faults faults, all within the batches."""
    plans = [FaultPlan.from_seed(s, batches=9, max_faults=3) for s in range(len(FAULT_KINDS))]
    assert set().union(*(p.kinds for p in plans)) == set(FAULT_KINDS)
    for plan in plans:
        assert 1 <= len(plan.faults) <= 3
        assert len(plan.kinds) == len(plan.faults)
        assert all(1 <= f.at <= 9 for f in plan.faults)


def test_an_unknown_fault_kind_is_a_config_error() -> None:
    """A misspelt kind is refused with the list of kinds."""
    with pytest.raises(ConfigError, match="http_5xx"):
        FaultPlan.from_seed(1, kinds=["http_500"])


def test_source_errors_fire_once_each_across_restarts() -> None:
    """Each error fault fails one pull, as mendflow's own error; re-reads then pass it, and the
    journal counts one injection per kind."""
    plan = FaultPlan(1, (Fault("http_5xx", 2, status=503), Fault("rate_limit", 3, seconds=5.0),
                         Fault("permanent", 8, status=401)))
    source = FaultySource(_pages(), plan)
    *errors, batches = _drain(source)
    assert [type(e) for e in errors] == [SourceUnavailable, RateLimited, SourceRejected]
    assert errors[0].status == 503
    assert errors[1].retry_after_s == 5.0
    assert errors[2].status == 401
    assert len(batches) == 4
    assert source.journal.injected() == {"http_5xx": 1, "rate_limit": 1, "permanent": 1}


def test_a_permanent_fault_fails_every_read_until_cleared() -> None:
    """A 401 is not a blip: every read from its pull on fails until a human clears it."""
    source = FaultySource(_pages(), FaultPlan(1, (Fault("permanent", 2, status=401),)))
    for _ in range(3):
        with pytest.raises(SourceRejected):
            list(source.read({}))
    clear(source.journal, source.plan)
    assert len(list(source.read({}))) == 4


def test_timeouts_and_latency_wait_on_the_injected_clock() -> None:
    """A timeout waits its seconds then fails; a spike delays one pull, a slow spell several."""
    clock = FakeClock()
    plan = FaultPlan(1, (Fault("timeout", 1, seconds=12.0), Fault("latency", 2, seconds=7.0),
                         Fault("slow", 3, span=2, seconds=1.5)))
    source = FaultySource(_pages(), plan, clock=clock)
    errors = _drain(source)[:-1]
    assert [type(e) for e in errors] == [SourceUnavailable]
    assert clock.sleeps == [12.0, 7.0, 1.5, 1.5]
    assert source.journal.injected() == {"timeout": 1, "latency": 1, "slow": 1}


def test_corruption_hits_the_same_rows_on_every_read_and_is_noted_once() -> None:
    """Truncated records become parse rejects, malformed ones get a value that does not cast,
    identically when the batch is read again; their keys are noted once."""
    plan = FaultPlan(1, (Fault("truncated", 2, span=1, pick=3), Fault("malformed", 2, pick=5)))
    source = FaultySource(_pages(), plan, key=("id",), column="amount")
    first, again = list(source.read({})), list(source.read({}))
    for batches in (first, again):
        assert [b.records for b in batches] == [3, 3, 3, 3]
        assert batches[1].rejects.num_rows == 1
        assert batches[1].data.num_rows == 2
        assert "!chaos-malformed" in batches[1].data["amount"].to_pylist()
    assert first[1].data.equals(again[1].data)
    noted = source.journal.noted("corrupted")
    assert sorted(n["kind"] for n in noted) == ["malformed", "truncated"]
    assert all(len(n["keys"]) == 1 and n["keys"][0] in {"3", "4", "5"} for n in noted)


def test_a_schema_change_adds_a_column_from_its_batch_on() -> None:
    """From the batch of the fault's ordinal on, every batch carries the new column."""
    source = FaultySource(_pages(), FaultPlan(1, (Fault("schema_change", 3),)))
    batches = list(source.read({}))
    assert ["chaos_v2" in b.data.column_names for b in batches] == [False, False, True, True]
    assert source.journal.injected() == {"schema_change": 1}


def _load(n: int) -> Load:
    import pyarrow as pa

    return Load(pipeline="p", run_id="r", batch_id=f"b{n}", data=pa.table({"id": [n]}),
                position={"next": n})


def test_the_sink_outage_lasts_its_span_and_the_first_failure_can_be_mid_transaction() -> None:
    """An outage fails span writes in a row (the first one after staging, with an odd pick),
    nothing of them committed; then writes go through."""
    inner, staged = ListSink(), []
    sink = FaultySink(inner, FaultPlan(1, (Fault("outage", 2, span=3, pick=1),)))
    sink.write(_load(1))
    for _ in range(3):
        with pytest.raises(DestinationUnavailable):
            sink.write(_load(2), on_staged=lambda: staged.append(1))
    sink.write(_load(2))
    assert [load.batch_id for load in inner.loads] == ["b1", "b2"]
    assert staged == [1]  # the first failure came inside the transaction
    assert sink.journal.injected() == {"outage": 1}


def test_sink_latency_waits_on_the_clock() -> None:
    """A late write costs its seconds on the injected clock, once."""
    clock = FakeClock()
    sink = FaultySink(ListSink(), FaultPlan(1, (Fault("sink_latency", 1, seconds=4.0),)),
                      clock=clock)
    sink.write(_load(1))
    sink.write(_load(2))
    assert clock.sleeps == [4.0]


def _api(request: httpx.Request) -> httpx.Response:
    page = int(request.url.params.get("page", "1"))
    return httpx.Response(200, json={"data": [{"id": page}] if page <= 3 else []})


def test_the_transport_answers_real_http_faults() -> None:
    """Requests get a real 503, a 429 with Retry-After, a read timeout and a reset, then the
    API's own answer."""
    plan = FaultPlan(1, (Fault("http_5xx", 1, status=503), Fault("rate_limit", 2, seconds=2.0),
                         Fault("timeout", 3, seconds=1.0), Fault("reset", 4)))
    client = httpx.Client(transport=FaultyTransport(httpx.MockTransport(_api), plan,
                                                    clock=FakeClock()))
    assert client.get("http://api.test/o").status_code == 503
    limited = client.get("http://api.test/o")
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "2")
    with pytest.raises(httpx.ReadTimeout):
        client.get("http://api.test/o")
    with pytest.raises(httpx.ReadError):
        client.get("http://api.test/o")
    assert client.get("http://api.test/o").status_code == 200


def test_an_http_source_heals_request_faults_with_its_own_retries() -> None:
    """Behind the faulty transport, an HttpSource retries each fault away and reads every page."""
    clock = FakeClock()
    plan = FaultPlan(1, (Fault("http_5xx", 1, status=502), Fault("rate_limit", 3, seconds=3.0),
                         Fault("reset", 5)))
    transport = FaultyTransport(httpx.MockTransport(_api), plan, clock=clock)
    source = HttpSource("http://api.test/o", records_path="data", breaker=None, clock=clock,
                        pagination=Pagination("page"), transport=transport)
    rows = [r for b in source.read({}) for r in b.data.to_pylist()]
    assert rows == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert transport.journal.injected() == {"http_5xx": 1, "rate_limit": 1, "reset": 1}
    assert 3.0 in clock.sleeps


def test_the_journal_survives_a_restart(tmp_path: Path) -> None:
    """Counts, fired faults, batch ordinals and the clock offset are read back from the file."""
    path = tmp_path / "journal.jsonl"
    first = Journal(path)
    first.count("pull")
    first.count("pull")
    first.fire("kill@1", "kill")
    first.ordinal("b-x")
    first.advance(2.5)
    again = Journal(path)
    assert (again.count("pull"), again.fired("kill@1"), again.ordinal("b-y")) == (3, True, 2)
    assert again.offset_s == 2.5
    assert again.injected() == {"kill": 1}


@pytest.fixture(scope="module")
def drops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three files of 600 orders."""
    return write_drops(tmp_path_factory.mktemp("chaos") / "drops")


def _chaos(pipeline: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(
        main, ["chaos", str(pipeline), "--workdir", str(pipeline.parent / "work"), "--json",
               *args])
    try:
        return result.exit_code, json.loads(result.output.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise AssertionError(result.output) from result.exception


def _assert_proved(report: dict[str, Any]) -> None:
    summary = report["summary"]
    assert summary["discrepancies"] == 0, [
        (s["seed"], s["plan"], s["problems"]) for s in report["seeds"] if s["problems"]]
    assert summary["seeds"] == SEEDS
    assert summary["never_injected"] == []
    assert all(summary["faults"].values())
    assert summary["escalations"] == summary["expected_escalations"] > 0
    assert summary["kills"] >= 1
    for seed in report["seeds"]:
        assert seed["pages"] == seed["injected"].get("permanent", 0)


@pytest.mark.slow
def test_chaos_over_duckdb_matches_the_reference_on_every_seed(
    drops: Path, tmp_path: Path
) -> None:
    """25 seeds into DuckDB: every fault kind injected, 0 discrepancies, one page per
    permanent fault and none for the recoverable ones."""
    pipeline = pipeline_file(tmp_path, drops, {"type": "duckdb", "path": "w.duckdb",
                                               "table": "orders"})
    code, report = _chaos(pipeline, "--seeds", str(SEEDS), "--jobs", "2")
    _assert_proved(report)
    assert code == 0


@pytest.mark.slow
def test_chaos_over_postgres_matches_the_reference_on_every_seed(
    drops: Path, tmp_path: Path, pg_url: str
) -> None:
    """25 seeds into PostgreSQL (a schema per seed): every fault kind injected, 0 discrepancies,
    one page per permanent fault and none for the recoverable ones."""
    pipeline = pipeline_file(tmp_path, drops, {"type": "postgres", "url": pg_url,
                                               "table": "orders"})
    code, report = _chaos(pipeline, "--seeds", str(SEEDS), "--first-seed", "101",
                          "--jobs", "2")
    _assert_proved(report)
    assert code == 0


def test_a_sink_that_drops_a_batch_is_reported_as_a_discrepancy(
    drops: Path, tmp_path: Path
) -> None:
    """A sink that says it committed a batch it never wrote fails the run (exit 1) with the
    rows missing."""
    pipeline = pipeline_file(tmp_path, drops, {"type": "duckdb", "path": "w.duckdb",
                                               "table": "orders"})
    code, report = _chaos(pipeline, "--seeds", "2", "--faults", "latency",
                          "--wrap-sink", "tests.chaos_helpers:drops_third_batch")
    assert code == 1
    assert report["summary"]["discrepancies"] == 2
    assert any("rows differ" in p for p in report["seeds"][0]["problems"])


def test_chaos_without_a_key_is_a_user_error(drops: Path, tmp_path: Path) -> None:
    """A pipeline with no primary key and no --key cannot be compared: exit 2."""
    pipeline = pipeline_file(tmp_path, drops, {"type": "duckdb", "path": "w.duckdb",
                                               "table": "orders"})
    text = pipeline.read_text().replace("write_mode: merge", "write_mode: append")
    pipeline.write_text(text.replace("primary_key:\n- id\n", ""))
    result = CliRunner().invoke(main, ["chaos", str(pipeline), "--seeds", "1"])
    assert result.exit_code == 2, result.output
    assert "--key" in result.output
