"""Fallback tiers: primary, secondary, snapshot; provenance on every batch; convergence after;
each switch of tier an event of the run."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from mendflow import (
    ConfigError,
    DuckDBSink,
    HttpSource,
    Pagination,
    Pipeline,
    Position,
    Retry,
    SourceRejected,
    SourceUnavailable,
)
from mendflow.batch import Batch
from mendflow.demo._api import OrdersApi
from mendflow.events import BatchRead, TierSwitched
from mendflow.sources.fallback import (
    FallbackSource,
    SnapshotSource,
    SnapshotStore,
    provenance,
)
from mendflow.testing import EventLog, FakeClock, MemorySource, capture_events
from mendflow.typing import Source
from tests.conftest import table_hash

ALWAYS_503 = dict.fromkeys(range(1, 200), "503")


def _http(api: OrdersApi, name: str) -> HttpSource:
    """The orders API read in pages of 50, incrementally, failing at the first error."""
    return HttpSource(
        f"{api.url}/orders",
        records_path="data",
        pagination=Pagination("cursor", cursor_param="cursor", cursor_path="next_cursor"),
        incremental_field="updated_at",
        incremental_param="updated_since",
        params={"limit": "50"},
        timeout_s=2,
        retry=Retry(attempts=1),
        name=name,
    )


def _pipeline(source: Source, db: Path) -> Pipeline:
    return Pipeline(
        name="orders",
        source=source,
        destination=DuckDBSink(db, table="orders"),
        write_mode="merge",
        primary_key="id",
    )


def _table(db: Path) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT * FROM orders ORDER BY id").fetchall()
    finally:
        con.close()


def _rows(tables: Iterable[pa.Table]) -> list[dict[str, Any]]:
    return [row for table in tables for row in table.to_pylist()]


def _served_by(batches: Iterable[Batch]) -> set[str]:
    return {provenance(batch)["tier"] for batch in batches}


def _switches(events: EventLog) -> list[tuple[str, str, str, str]]:
    """(dependency, previous, tier, error_type) of each tier.switched event, in order."""
    return [
        (e.dependency, e.previous, e.tier, e.error_type)
        for e in events
        if isinstance(e, TierSwitched)
    ]


class _Down:
    """A source whose every read fails as if its service were unreachable."""

    def __init__(self, name: str) -> None:
        self.name = name

    def read(self, position: Position) -> Iterator[Batch]:
        raise SourceUnavailable(f"{self.name} is down", dependency=self.name)


@dataclass
class _Named:
    """Another source under a tier name of its own, its batch ids untouched."""

    name: str
    inner: Source

    def read(self, position: Position) -> Iterator[Batch]:
        return self.inner.read(position)


def test_a_healthy_primary_serves_every_batch_and_takes_a_snapshot(tmp_path: Path) -> None:
    """Batches come from the primary, live, and its complete extract becomes the snapshot."""
    clock, store = FakeClock(), SnapshotStore(tmp_path / "snapshots")
    with OrdersApi(orders=120) as primary, OrdersApi(orders=120, seed=7) as secondary:
        source = FallbackSource(
            _http(primary, "primary"), _http(secondary, "secondary"), snapshots=store, clock=clock
        )
        batches = list(source.read({}))
    assert [provenance(b) for b in batches] == [
        {"tier": "primary", "tier_index": 0, "stale_s": 0}
    ] * 3
    assert [b.source for b in batches] == ["primary"] * 3
    assert _rows(b.data for b in batches) == primary.records
    assert secondary.log == []
    assert batches[-1].position["fallback"] is None
    assert store.taken_at("primary") == clock.now()
    assert _rows(store.read("primary")) == primary.records


@pytest.mark.parametrize("outage", ["server stopped", "every request 503"])
def test_a_primary_that_is_down_is_served_by_the_secondary(outage: str) -> None:
    """The secondary serves the batches, and the provenance and the position say so."""
    faults = ALWAYS_503 if outage == "every request 503" else {}
    with OrdersApi(orders=120, faults=faults) as primary, OrdersApi(orders=120, seed=7) as second:
        source = FallbackSource(_http(primary, "primary"), _http(second, "secondary"))
        if outage == "server stopped":
            primary.stop()
        batches = list(source.read({}))
    assert [provenance(b) for b in batches] == [
        {"tier": "secondary", "tier_index": 1, "stale_s": 0}
    ] * 3
    assert _rows(b.data for b in batches) == second.records
    assert batches[-1].position["fallback"] == {"since": {}, "tier": "secondary"}
    assert "primary" not in batches[-1].position["tiers"]


def test_the_snapshot_serves_when_primary_and_secondary_are_down(tmp_path: Path) -> None:
    """The last good extract is served once, as stale as the fake clock says it is."""
    clock, store = FakeClock(), SnapshotStore(tmp_path / "snapshots")
    with OrdersApi(orders=120) as primary, OrdersApi(orders=120, seed=7) as secondary:
        source = FallbackSource(
            _http(primary, "primary"), _http(secondary, "secondary"), snapshots=store, clock=clock
        )
        healthy = list(source.read({}))[-1].position
        primary.stop()
        secondary.stop()
        clock.advance(3600)
        batches = list(source.read(healthy))
        again = list(source.read(batches[-1].position))
    assert [provenance(b) for b in batches] == [
        {"tier": "snapshot:primary", "tier_index": 2, "stale_s": 3600}
    ] * 3
    assert _rows(b.data for b in batches) == primary.records
    assert batches[-1].position["fallback"] == {
        "since": healthy["tiers"]["primary"],
        "tier": "snapshot:primary",
    }
    assert again == []


def test_merge_converges_to_the_primary_once_it_is_back(tmp_path: Path) -> None:
    """The window the secondary served is read again from the primary, which then wins."""
    db, reference = tmp_path / "fallback.duckdb", tmp_path / "primary-only.duckdb"
    with OrdersApi(orders=120, faults={1: "503"}) as primary, OrdersApi(
        orders=120, seed=7
    ) as secondary:
        source = FallbackSource(_http(primary, "primary"), _http(secondary, "secondary"))
        with capture_events() as first:
            _pipeline(source, db).run(hooks=[first])
        loaded_from_secondary = _table(db)
        with capture_events() as second:
            result = _pipeline(source, db).run(hooks=[second])
        _pipeline(_http(primary, "primary"), reference).run()
    assert {e.source for e in first if isinstance(e, BatchRead)} == {"secondary"}
    assert loaded_from_secondary == [tuple(r.values()) for r in secondary.records]
    assert {e.source for e in second if isinstance(e, BatchRead)} == {"primary"}
    assert result.rows_loaded == 120
    assert result.position["fallback"] is None
    assert _table(db) == _table(reference)
    assert table_hash(db, "orders") == table_hash(reference, "orders")


def test_a_later_outage_still_converges_to_the_primary(tmp_path: Path) -> None:
    """After a second outage and recovery, the table equals a primary-only load."""
    db, reference = tmp_path / "fallback.duckdb", tmp_path / "primary-only.duckdb"
    with OrdersApi(orders=120, faults={4: "503"}) as primary, OrdersApi(
        orders=120, seed=7
    ) as secondary:
        source = FallbackSource(_http(primary, "primary"), _http(secondary, "secondary"))
        _pipeline(source, db).run()  # requests 1-3: the primary is healthy
        primary.add_orders(30)
        secondary.add_orders(30)
        _pipeline(source, db).run()  # request 4 fails: the secondary serves
        _pipeline(source, db).run()  # the primary is back
        _pipeline(_http(primary, "primary"), reference).run()
    assert _table(db) == _table(reference)


def test_a_fallback_episode_starts_a_secondary_at_the_primary_position() -> None:
    """A secondary serves only what follows the primary's position, then resumes its own."""
    pages = [[{"id": n}] for n in range(1, 5)]
    healthy = list(FallbackSource(MemorySource(pages[:3], name="primary")).read({}))[-1].position
    secondary = MemorySource(pages, name="secondary")
    fallen = FallbackSource(_Down("primary"), secondary)
    first = next(iter(fallen.read(healthy)))
    secondary.pages.append([{"id": 5}])
    rest = list(fallen.read(first.position))
    assert first.data.to_pylist() == [{"id": 4}]
    assert first.position["fallback"] == {"since": {"next": 3}, "tier": "secondary"}
    assert [b.data.to_pylist() for b in rest] == [[{"id": 5}]]


def test_shared_positions_false_reads_each_secondary_from_its_own_position() -> None:
    """For a secondary whose positions mean something else, the primary's is never passed."""
    pages = [[{"id": n}] for n in range(1, 5)]
    healthy = list(FallbackSource(MemorySource(pages[:3], name="primary")).read({}))[-1].position
    secondary = MemorySource(pages, name="secondary")
    fallen = FallbackSource(_Down("primary"), secondary, shared_positions=False)
    batches = list(fallen.read(healthy))
    assert [b.data.to_pylist() for b in batches] == [[{"id": n}] for n in range(1, 5)]
    assert batches[-1].position["tiers"]["secondary"] == {"next": 4}
    assert fallen.reading_as_text(["id"]).shared_positions is False


def test_a_snapshot_older_than_the_loaded_rows_is_not_served(tmp_path: Path) -> None:
    """After a read of the primary failed midway, its last snapshot could undo loaded rows."""
    store = SnapshotStore(tmp_path / "snapshots")
    with OrdersApi(orders=120, faults={5: "503"}) as primary, OrdersApi(seed=7) as secondary:
        source = FallbackSource(
            _http(primary, "primary"), _http(secondary, "secondary"), snapshots=store
        )
        healthy = list(source.read({}))[-1].position  # requests 1-3; the snapshot is taken
        primary.add_orders(120)
        partial = source.read(healthy)
        loaded = next(partial).position  # request 4: the first page of the new orders
        with pytest.raises(SourceUnavailable):
            next(partial)  # request 5 fails after a batch: no fallback, no new snapshot
        primary.stop()
        secondary.stop()
        with pytest.raises(SourceUnavailable) as caught:
            list(source.read(loaded))
    assert store.latest("primary") is not None
    assert "'snapshot:primary' failed too" in caught.value.__notes__[1]
    assert "could put older rows back" in caught.value.__notes__[1]


def test_a_snapshot_serves_where_the_primary_stands_or_before_anything_is_loaded(
    tmp_path: Path,
) -> None:
    """A snapshot taken at the primary's position, or any when the primary never loaded, serves."""
    store = SnapshotStore(tmp_path)
    store.record("primary", Batch("b1", pa.table({"id": [1, 2]}), {}))
    store.commit("primary", position={"next": 2})
    source = FallbackSource(_Down("primary"), snapshots=store)
    at_snapshot = list(source.read({"next": 2}))
    from_scratch = list(source.read({}))
    with pytest.raises(SourceUnavailable, match="primary is down") as caught:
        list(source.read({"next": 3}))
    assert _rows(b.data for b in at_snapshot) == _rows(b.data for b in from_scratch)
    assert _rows(b.data for b in at_snapshot) == [{"id": 1}, {"id": 2}]
    assert "not at {'next': 3}" in caught.value.__notes__[0]


def test_switching_tiers_and_returning_to_the_primary_are_events(tmp_path: Path) -> None:
    """Each run says which tier failed, with what, where it went, and when the primary is back."""
    db = tmp_path / "fallback.duckdb"
    with OrdersApi(orders=120, faults={1: "503"}) as primary, OrdersApi(
        orders=120, seed=7
    ) as secondary:
        source = FallbackSource(_http(primary, "primary"), _http(secondary, "secondary"))
        with capture_events() as outage:
            _pipeline(source, db).run(hooks=[outage])
        with capture_events() as back:
            _pipeline(source, db).run(hooks=[back])
        with capture_events() as healthy:
            _pipeline(source, db).run(hooks=[healthy])
    assert _switches(outage) == [("primary", "primary", "secondary", "SourceUnavailable")]
    assert outage.kinds().index("tier.switched") < outage.kinds().index("batch.read")
    assert _switches(back) == [("primary", "secondary", "primary", "")]
    assert [e.reason for e in back if isinstance(e, TierSwitched)] == [
        "primary healthy again; re-reading from where it failed"
    ]
    assert _switches(healthy) == []


def test_every_tier_switched_to_is_an_event_down_to_the_snapshot(tmp_path: Path) -> None:
    """With both live tiers down, two switches lead to the snapshot; with it gone, the run fails."""
    db, store = tmp_path / "fallback.duckdb", SnapshotStore(tmp_path / "snapshots")
    with OrdersApi(orders=120) as primary, OrdersApi(seed=7) as secondary:
        source = FallbackSource(
            _http(primary, "primary"), _http(secondary, "secondary"), snapshots=store
        )
        _pipeline(source, db).run()
        primary.stop()
        secondary.stop()
        with capture_events() as outage:
            _pipeline(source, db).run(hooks=[outage])
    shutil.rmtree(tmp_path / "snapshots")
    with capture_events() as failed, pytest.raises(SourceUnavailable):
        _pipeline(source, db).run(hooks=[failed])
    assert _switches(outage) == [
        ("primary", "primary", "secondary", "SourceUnavailable"),
        ("secondary", "secondary", "snapshot:primary", "SourceUnavailable"),
    ]
    assert [e.reason for e in outage if isinstance(e, TierSwitched)] == [
        "'primary' failed before its first batch; 'secondary' serves instead",
        "'secondary' failed before its first batch; 'snapshot:primary' serves instead",
    ]
    assert _switches(failed) == _switches(outage)
    assert failed.kinds()[-1] == "run.failed"


def test_a_permanent_error_on_the_primary_does_not_fall_back() -> None:
    """A 401 is raised as it is; the secondary is never asked."""
    with OrdersApi(orders=10, faults={1: "401"}) as primary, OrdersApi(seed=7) as secondary:
        source = FallbackSource(_http(primary, "primary"), _http(secondary, "secondary"))
        with pytest.raises(SourceRejected) as caught:
            list(source.read({}))
    assert caught.value.status == 401
    assert secondary.log == []


def test_a_failure_after_the_first_batch_propagates_and_takes_no_snapshot(
    tmp_path: Path,
) -> None:
    """Once the primary has served a batch, its errors are the read's; the snapshot is dropped."""
    store = SnapshotStore(tmp_path / "snapshots")
    with OrdersApi(orders=120, faults={2: "503"}) as primary, OrdersApi(seed=7) as secondary:
        read = FallbackSource(
            _http(primary, "primary"), _http(secondary, "secondary"), snapshots=store
        ).read({})
        first = next(read)
        with pytest.raises(SourceUnavailable):
            next(read)
    assert provenance(first)["tier"] == "primary"
    assert secondary.log == []
    assert store.taken_at("primary") is None
    assert list(tmp_path.rglob("*.parquet")) == []


def test_a_store_that_cannot_write_costs_the_snapshot_not_the_batches(tmp_path: Path) -> None:
    """The primary's batches still flow; a warning says the snapshot was not taken."""
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    source = FallbackSource(
        MemorySource([[{"id": 1}], [{"id": 2}]], name="primary"),
        snapshots=SnapshotStore(blocked / "snapshots"),
    )
    with pytest.warns(RuntimeWarning, match="no snapshot of 'primary'"):
        batches = list(source.read({}))
    assert [b.data.to_pylist() for b in batches] == [[{"id": 1}], [{"id": 2}]]


def test_when_every_tier_fails_the_primary_error_is_raised_noting_the_others(
    tmp_path: Path,
) -> None:
    """The primary's own error, its cause kept, with one note per other tier."""
    source = FallbackSource(
        _Down("primary"), _Down("secondary"), snapshots=SnapshotStore(tmp_path)
    )
    with pytest.raises(SourceUnavailable, match="primary is down") as caught:
        list(source.read({}))
    notes = caught.value.__notes__
    assert len(notes) == 2
    assert "'secondary'" in notes[0]
    assert "'snapshot:primary'" in notes[1]
    assert "no snapshot of 'primary'" in notes[1]


def test_batch_ids_repeat_for_a_position_and_differ_between_tiers() -> None:
    """Ids come from the tier and its position, so the same inner id from two tiers differs."""
    pages = [[{"id": 1}], [{"id": 2}]]
    primary = _Named("primary", MemorySource(pages, name="orders"))
    secondary = _Named("secondary", MemorySource(pages, name="orders"))
    healthy = [b.id for b in FallbackSource(primary, secondary).read({})]
    again = [b.id for b in FallbackSource(primary, secondary).read({})]
    fallen = [b.id for b in FallbackSource(_Down("primary"), secondary).read({})]
    assert healthy == again == ["primary:orders#0", "primary:orders#1"]
    assert fallen == ["secondary:orders#0", "secondary:orders#1"]


def test_the_primary_checkpoint_from_before_is_kept() -> None:
    """Wrapping a source in a FallbackSource resumes from that source's committed position."""
    source = FallbackSource(MemorySource([[{"id": 1}], [{"id": 2}]], name="primary"))
    batches = list(source.read({"next": 1}))
    assert [b.data.to_pylist() for b in batches] == [[{"id": 2}]]
    assert batches[0].position == {"tiers": {"primary": {"next": 2}}, "fallback": None}


def test_tiers_need_distinct_names() -> None:
    """Positions are kept per tier name, so two tiers with one name are refused."""
    with pytest.raises(ConfigError, match="distinct"):
        FallbackSource(MemorySource([], name="api"), MemorySource([], name="api"))


def test_an_uncommitted_snapshot_is_invisible_and_a_crash_keeps_the_last_one(
    tmp_path: Path,
) -> None:
    """Until commit, readers see the previous snapshot, also from a new process after a crash."""
    store = SnapshotStore(tmp_path, clock=FakeClock())
    store.record("orders", Batch("b1", pa.table({"id": [1, 2]}), {}))
    assert store.taken_at("orders") is None
    first = store.commit("orders")
    store.record("orders", Batch("b2", pa.table({"id": [3]}), {}))
    # the process dies here, before commit; another one opens the store
    reopened = SnapshotStore(tmp_path)
    assert _rows(reopened.read("orders")) == [{"id": 1}, {"id": 2}]
    assert reopened.taken_at("orders") == first.taken_at
    reopened.record("orders", Batch("b4", pa.table({"id": [4]}), {}))
    reopened.commit("orders")
    assert _rows(reopened.read("orders")) == [{"id": 4}]
    assert len(list(tmp_path.rglob("*.parquet"))) == 1  # the old and the dead parts are gone


def test_a_snapshot_is_served_once_and_a_newer_one_from_its_start(tmp_path: Path) -> None:
    """The position holds the snapshot's time and the rows served; a new snapshot starts over."""
    clock = FakeClock()
    store = SnapshotStore(tmp_path, clock=clock)
    store.record("orders", Batch("b1", pa.table({"id": [1, 2]}), {}))
    store.record("orders", Batch("b2", pa.table({"id": [3]}), {}))
    store.commit("orders")
    source = SnapshotSource(store, "orders")
    first = next(iter(source.read({})))
    rest = list(source.read(first.position))
    assert [b.data.to_pylist() for b in rest] == [[{"id": 3}]]
    assert rest[0].position == {"taken_at": clock.now(), "offset": 3}
    assert list(source.read(rest[0].position)) == []
    clock.advance(60)
    store.record("orders", Batch("b3", pa.table({"id": [9]}), {}))
    store.commit("orders")
    assert [b.data.to_pylist() for b in source.read(rest[0].position)] == [[{"id": 9}]]
