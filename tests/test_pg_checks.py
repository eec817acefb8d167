"""Write-audit-publish on a PostgreSQL destination: the checks judge each load inside its
transaction, against the table and the pipeline's committed batches, before commit."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from mendflow.batch import Load
from mendflow.checks import NullRate, UniqueKey, Volume
from mendflow.events import CheckRan
from mendflow.exceptions import CheckFailed
from mendflow.pipeline import Pipeline
from mendflow.sinks.postgres import PostgresSink
from mendflow.testing import EventLog, FakeClock, MemorySource
from mendflow.typing import Check


def _rows(ids: Sequence[int], **extra: Any) -> list[dict[str, Any]]:
    return [{"id": i, **extra} for i in ids]


def _pipeline(
    url: str, pages: Sequence[Sequence[dict[str, Any]]], checks: Sequence[Check] = (), **kw: Any
) -> Pipeline:
    return Pipeline(name="orders", source=MemorySource(pages),
                    destination=PostgresSink(url, table="orders"), checks=checks, **kw)


def _run(pipeline: Pipeline, log: EventLog | None = None) -> Any:
    try:
        return pipeline.run(hooks=[log] if log is not None else [], clock=FakeClock())
    finally:
        pipeline.destination.close()


def _query(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as con:
        return [tuple(r) for r in con.execute(query).fetchall()]


def _failures(log: EventLog) -> list[CheckRan]:
    return [e for e in log if isinstance(e, CheckRan)]


def _pages(sizes: Sequence[int]) -> list[list[dict[str, Any]]]:
    """Pages of the given sizes with ids that never repeat."""
    pages, start = [], 0
    for size in sizes:
        pages.append(_rows(range(start, start + size)))
        start += size
    return pages


def test_unique_key_refuses_a_key_already_in_the_table(pg_url: str) -> None:
    """A batch re-using a key already loaded is rolled back whole, and the failure reported."""
    _run(_pipeline(pg_url, [_rows([1, 2, 3])], [UniqueKey(("id",))]))
    log = EventLog()
    with pytest.raises(CheckFailed) as caught:
        _run(_pipeline(pg_url, [_rows([1, 2, 3]), _rows([3, 4])], [UniqueKey(("id",))]), log)
    assert caught.value.check == "unique_key(id)"
    assert "1 key(s) of this batch are held by more than one row of orders" in str(caught.value)
    assert _query(pg_url, "SELECT id FROM orders ORDER BY id") == [(1,), (2,), (3,)]
    [event] = _failures(log)
    assert (event.batch_id, event.blocking, event.passed) == ("memory#1", True, False)


def test_unique_key_counts_only_the_batchs_keys_and_merge_keeps_keys_unique(pg_url: str) -> None:
    """Duplicates already in the table outside the batch's keys do not fail it; merge passes."""
    _run(_pipeline(pg_url, [_rows([1, 1, 2])]))  # no check: the table holds id 1 twice
    _run(_pipeline(pg_url, [_rows([1, 1, 2]), _rows([5, 6])], [UniqueKey(("id",))]))
    assert _query(pg_url, "SELECT count(*) FROM orders") == [(5,)]
    merged = Pipeline(
        name="m", source=MemorySource([_rows([1, 2], v=1), _rows([2, 3], v=2)]),
        destination=PostgresSink(pg_url, table="merged"), checks=[UniqueKey(("id",))],
        write_mode="merge", primary_key="id")
    _run(merged)
    assert _query(pg_url, "SELECT id, v FROM merged ORDER BY id") == [(1, 1), (2, 2), (3, 2)]


def test_unique_key_compares_keys_in_the_tables_types(pg_url: str) -> None:
    """A composite key with a decimal (staged as text, stored as numeric) and a date is looked
    up in the table's own types: a repeated key is found, a new one passes."""
    sink = PostgresSink(pg_url, table="t")
    check = (UniqueKey(("code", "day")),)

    def load(batch_id: str, codes: list[str]) -> Load:
        data = pa.table({"code": pa.array([Decimal(c) for c in codes], pa.decimal128(6, 2)),
                         "day": pa.array([0] * len(codes), pa.date32())})
        return Load(pipeline="p", run_id="r", batch_id=batch_id, data=data,
                    position={"b": batch_id}, checks=check)

    assert sink.write(load("b1", ["1.50", "2.00"]))
    assert sink.write(load("b2", ["3.25"]))
    with pytest.raises(CheckFailed, match="1 key"):
        sink.write(load("b3", ["2.00", "4.00"]))
    assert sink.position("p") == {"b": "b2"}
    sink.close()
    assert _query(pg_url, "SELECT code FROM t ORDER BY code") == [
        (Decimal("1.50"),), (Decimal("2.00"),), (Decimal("3.25"),)]


def test_volume_warns_on_an_outlier_against_the_committed_history(pg_url: str) -> None:
    """Under min_history it passes; an outlier of z 6.745 warns and the batch still commits."""
    log = EventLog()
    _run(_pipeline(pg_url, _pages([100, 102, 98, 101, 99, 110]),
                   [Volume(z=3.5, min_history=5)]), log)
    [event] = _failures(log)
    assert (event.batch_id, event.check, event.blocking) == ("memory#5", "volume", False)
    assert event.message.startswith("110 rows against a median of 100 over the last 5 batches: "
                                    "robust z-score +6.75, limit ±3.5. ")
    assert _query(pg_url, "SELECT count(*) FROM orders") == [(610,)]


def test_volume_judges_the_newest_window_of_batches(pg_url: str) -> None:
    """Window 3, in commit order: a drop from ~150 to ~100 warns until the window holds the new
    level, then a return to 150 warns in turn."""
    log = EventLog()
    _run(_pipeline(pg_url, _pages([150, 152, 148, 151, 100, 101, 99, 150]),
                   [Volume(min_history=3, window=3)]), log)
    assert [e.batch_id for e in _failures(log)] == ["memory#4", "memory#5", "memory#7"]


def test_replays_and_empty_batches_neither_feed_nor_face_the_volume_history(pg_url: str) -> None:
    """Small replay loads (no position, ids ``replay:...``) are not judged by a blocking volume
    check and do not drag the median down for the source's next batch."""
    sink = PostgresSink(pg_url, table="orders")
    volume = (Volume(z=1.0, min_history=5, blocking=True),)

    def load(batch_id: str, start: int, rows: int, position: dict[str, int] | None) -> Load:
        data = pa.table({"id": pa.array(range(start, start + rows), pa.int64())})
        return Load(pipeline="p", run_id="r", batch_id=batch_id, data=data, position=position,
                    checks=volume)

    for n in range(5):
        assert sink.write(load(f"b{n}", n * 100, 100, {"n": n}))
    for n in range(6):
        assert sink.write(load(f"replay:{n}", 1000 + n, 1, None))
    assert sink.write(load("b5", 2000, 100, {"n": 5}))  # median 100, not 1
    with pytest.raises(CheckFailed, match="volume: 1 rows against a median of 100"):
        sink.write(load("b6", 3000, 1, {"n": 6}))
    sink.close()


def _contents(url: str) -> dict[str, Any]:
    """Every table of the database: its columns and types and a hash of its rows."""
    found: dict[str, Any] = {}
    with psycopg.connect(url) as con:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "ORDER BY 1").fetchall()]
        for table in tables:
            columns = con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
                (table,)).fetchall()
            rows = con.execute(psycopg.sql.SQL(
                "SELECT count(*), coalesce(md5(string_agg(md5(CAST(t AS TEXT)), ',' "
                "ORDER BY md5(CAST(t AS TEXT)))), '') FROM {} t").format(
                    psycopg.sql.Identifier(table))).fetchall()
            found[table] = (columns, rows)
    return found


def _sequences(url: str) -> list[tuple[Any, ...]]:
    """Every sequence's last value (None: never drawn from)."""
    return _query(url, "SELECT sequencename, last_value FROM pg_sequences ORDER BY 1")


FIRST = _rows([1, 2], amount="1.5")
SECOND = [*_rows([2, 3], amount="2.5"), {"id": 4, "amount": "n/a"}]  # a dup key, a dead letter
DECLARED = {"amount": "double"}


def _fail_second(url: str) -> None:
    with pytest.raises(CheckFailed):
        _run(_pipeline(url, [FIRST, SECOND], [UniqueKey(("id",))], columns=DECLARED))


def test_a_failing_blocking_check_leaves_the_destination_unchanged(pg_url: str) -> None:
    """The failed batch carried new rows, a dead letter and a duplicate key: after the rollback
    every table and the checkpoint are as before; relaxed, the batch then loads exactly once."""
    _run(_pipeline(pg_url, [FIRST], columns=DECLARED))
    before = _contents(pg_url)
    assert before["_mendflow_dead_letters"][1] == [(0, "")]
    _fail_second(pg_url)
    assert _contents(pg_url) == before
    sink = PostgresSink(pg_url, table="orders")
    assert sink.position("orders") == {"next": 1}
    sink.close()
    relaxed = [UniqueKey(("id",), blocking=False)]
    for _ in range(2):  # the second run finds nothing new
        _run(_pipeline(pg_url, [FIRST, SECOND], relaxed, columns=DECLARED))
    assert _query(pg_url, "SELECT id, count(*) FROM orders GROUP BY id ORDER BY id") == [
        (1, 1), (2, 2), (3, 1)]
    assert _query(pg_url, "SELECT batch_id, row_index FROM _mendflow_dead_letters") == [
        ("memory#1", 2)]
    assert _query(pg_url, "SELECT batch_id FROM _mendflow_batches ORDER BY n") == [
        ("memory#0",), ("memory#1",)]


def test_a_failing_blocking_check_draws_no_sequence_value(pg_url: str) -> None:
    """A batch refused by a check leaves every sequence's last value as it was."""
    _run(_pipeline(pg_url, [FIRST], columns=DECLARED))
    before = _sequences(pg_url)
    _fail_second(pg_url)
    assert _sequences(pg_url) == before


def test_a_failing_first_batch_leaves_no_table_behind(pg_url: str) -> None:
    """The CREATE TABLE of the first batch is rolled back with it."""
    with pytest.raises(CheckFailed):
        _run(_pipeline(pg_url, [_rows(range(4), email=None)], [NullRate("email", max_rate=0.0)]))
    assert "orders" not in _contents(pg_url)
