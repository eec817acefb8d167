"""KPIs come from the ledger and the run history, and the CLI reports the same figures."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mendflow import DuckDBSink, Pipeline, Retry, SourceUnavailable, StateStore
from mendflow.batch import Batch, Position
from mendflow.remediation.kpi import service_levels
from mendflow.remediation.supervisor import Healing, run_healing
from mendflow.testing import FakeClock, MemorySource


class Flaky:
    """A source that fails with a transient error on its first ``failures`` reads."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def read(self, position: Position) -> Iterator[Batch]:
        if self.failures > 0:
            self.failures -= 1
            raise SourceUnavailable("blip", dependency="flaky")
        yield from MemorySource([[{"id": 1}]]).read(position)


@pytest.fixture
def history(tmp_path: Path) -> tuple[StateStore, FakeClock]:
    """One incident healed after two restarts (15 s), then a clean run 85 s later."""
    store = StateStore(f"sqlite:///{tmp_path / 's.db'}")
    clock = FakeClock(start=1000.0)
    source = Flaky(failures=2)
    pipeline = Pipeline(name="p", source=source, destination=DuckDBSink(tmp_path / "d.duckdb",
                                                                         table="t"))
    healing = Healing(backoff=Retry(base_s=10.0, cap_s=100.0))
    run_healing(pipeline, store=store, healing=healing, clock=clock, draw=lambda: 0.5)
    assert clock.sleeps == [5.0, 10.0]
    clock.advance(85.0)
    pipeline.run(state=store, clock=clock)
    return store, clock


def test_kpis_follow_from_the_history(history: tuple[StateStore, FakeClock]) -> None:
    """Availability, MTTR, MTBF, auto-heal and retry figures match the timeline by hand."""
    store, _ = history
    [level] = service_levels(store, now=1200.0, freshness_s=50.0)
    assert level.span_s == 200.0
    assert level.availability == pytest.approx((50 + 50) / 200)  # fresh after 1015 and 1100
    assert (level.incidents, level.open_incidents) == (1, 0)
    assert level.mttr_s == pytest.approx(15.0)
    assert level.mtbf_s == pytest.approx(185.0)
    assert level.auto_heal_rate == 1.0
    assert (level.retries, level.retry_success_rate) == (0, 0.0)  # two runs failed, no retries
    store.close()


def test_the_cli_agrees_with_the_ledger(history: tuple[StateStore, FakeClock]) -> None:
    """`mendflow slo --json` reports the ledger's incidents, MTTR and auto-heal rate."""
    store, _ = history
    done = subprocess.run(
        [sys.executable, "-m", "mendflow", "slo", "--json", "--state", store.url],
        capture_output=True, text=True, timeout=60, check=True,
    )
    [level] = json.loads(done.stdout)
    assert (level["pipeline"], level["incidents"], level["mttr_s"], level["auto_heal_rate"]) == (
        "p", 1, 15.0, 1.0)
    store.close()
