"""The runner: events in order, every row accounted for, transforms, HTTP incremental cursor."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from mendflow import (
    ConfigError,
    DuckDBSink,
    HttpSource,
    Pagination,
    Pipeline,
    Retry,
    SqlTransform,
    StateStore,
    TransformError,
)
from mendflow.demo._api import OrdersApi
from mendflow.events import RunStarted
from mendflow.testing import MemorySource, capture_events
from tests.conftest import table_hash


def test_events_follow_each_batch_through_its_stages(tmp_path: Path) -> None:
    """Each batch is read, transformed, staged and loaded, between run.started and run.finished."""
    source = MemorySource([[{"id": 1}], [{"id": 2}]])
    with capture_events() as log:
        Pipeline(name="p", source=source, destination=DuckDBSink(tmp_path / "d.duckdb", table="t")
                 ).run(hooks=[log])
    per_batch = ["batch.read", "batch.transformed", "batch.staged", "batch.loaded"]
    first = [*per_batch[:3], "schema.changed", per_batch[3]]  # the table created: version 1
    assert log.kinds() == ["run.started", *first, *per_batch, "run.finished"]


def test_every_row_read_is_loaded_or_dead_lettered(tmp_path: Path) -> None:
    """rows read = rows loaded + dead letters, and the counts match the tables."""
    pages = [[{"id": i, "amount": "bad" if i % 4 == 0 else str(i)} for i in range(1, 21)]]
    db = tmp_path / "d.duckdb"
    result = Pipeline(name="p", source=MemorySource(pages), destination=DuckDBSink(db, table="t"),
                      columns={"amount": "double"}).run()
    assert (result.rows_read, result.rows_loaded, result.dead_letters) == (20, 15, 5)
    assert table_hash(db, "t")[0] == 15
    assert table_hash(db, "_mendflow_dead_letters")[0] == 5


def test_sql_and_python_transforms_shape_the_batch(tmp_path: Path) -> None:
    """Transforms run in order on the whole batch."""
    def double(table: pa.Table) -> pa.Table:
        return table.append_column("twice", pa.array([v * 2 for v in table["total"].to_pylist()]))

    db = tmp_path / "d.duckdb"
    Pipeline(
        name="p", source=MemorySource([[{"qty": 2, "price": 3}]]),
        destination=DuckDBSink(db, table="t"),
        transforms=[SqlTransform("SELECT qty * price AS total FROM batch"), double],
    ).run()
    import duckdb

    assert duckdb.connect(str(db)).execute("SELECT * FROM t").fetchall() == [(6, 12)]


def test_a_failing_transform_loads_nothing_and_names_the_transform(tmp_path: Path) -> None:
    """The run fails with TransformError; the destination keeps no part of the batch."""
    def broken(table: pa.Table) -> pa.Table:
        raise ValueError("no good")

    db = tmp_path / "d.duckdb"
    pipeline = Pipeline(name="p", source=MemorySource([[{"id": 1}]]),
                        destination=DuckDBSink(db, table="t"), transforms=[broken])
    with pytest.raises(TransformError, match=r"transform #1 \(broken\) failed: ValueError"):
        pipeline.run()
    sink = DuckDBSink(db, table="t")
    assert sink.position("p") == {}
    sink.close()


def test_merge_keeps_the_last_row_read_for_each_key(tmp_path: Path) -> None:
    """Within one batch and across batches, the row read last for a key is the one kept."""
    pages = [[{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 1, "v": "c"}, {"id": 1, "v": "d"}],
             [{"id": 2, "v": "z"}]]
    db = tmp_path / "d.duckdb"
    Pipeline(name="p", source=MemorySource(pages), destination=DuckDBSink(db, table="t"),
             write_mode="merge", primary_key="id").run()
    import duckdb

    rows = duckdb.connect(str(db)).execute("SELECT * FROM t ORDER BY id").fetchall()
    assert rows == [(1, "d"), (2, "z")]


def test_merge_without_a_primary_key_is_refused() -> None:
    """A merge needs a key; the error says how to fix it."""
    with pytest.raises(ConfigError, match="primary_key"):
        Pipeline(name="p", source=MemorySource([]), destination=DuckDBSink("x", table="t"),
                 write_mode="merge")


def test_unknown_column_type_is_refused_listing_the_known_ones() -> None:
    """A typo in a declared type is caught when the pipeline is built."""
    with pytest.raises(ConfigError, match=r"unknown column type 'dobule'.*double"):
        Pipeline(name="p", source=MemorySource([]), destination=DuckDBSink("x", table="t"),
                 columns={"amount": "dobule"})


def _api_pipeline(url: str, db: Path) -> Pipeline:
    return Pipeline(
        name="api",
        source=HttpSource(
            f"{url}/orders", records_path="data",
            pagination=Pagination(kind="cursor", cursor_param="cursor", cursor_path="next_cursor"),
            incremental_field="updated_at", incremental_param="updated_since",
            params={"limit": "50"}, timeout_s=2, retry=Retry(attempts=3, base_s=0.01),
        ),
        destination=DuckDBSink(db, table="orders"),
        write_mode="append",
        columns={"updated_at": "timestamptz"},
    )


def test_api_records_past_the_cursor_load_on_the_next_run_and_only_they(tmp_path: Path) -> None:
    """Append mode proves it: after new records arrive, the table has each record exactly once."""
    db = tmp_path / "d.duckdb"
    with OrdersApi(orders=180) as api:
        assert _api_pipeline(api.url, db).run().rows_loaded == 180
        assert _api_pipeline(api.url, db).run().rows_loaded == 0
        api.add_orders(37)
        assert _api_pipeline(api.url, db).run().rows_loaded == 37
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*), count(DISTINCT id) FROM orders").fetchone() == (217, 217)


def test_state_store_records_runs_and_marks_a_dead_run_interrupted(tmp_path: Path) -> None:
    """Each run is recorded with its counts; one left running is marked interrupted later."""
    store = StateStore(f"sqlite:///{tmp_path / 's.db'}")
    db = tmp_path / "d.duckdb"
    pipeline = Pipeline(name="p", source=MemorySource([[{"id": 1}, {"id": 2}]]),
                        destination=DuckDBSink(db, table="t"))
    with capture_events() as log:
        pipeline.run(hooks=[log], state=store)
    first = log[0].run_id
    store.record(RunStarted(run_id="dead", pipeline="p", at=log[-1].at + 1, write_mode="append"))
    pipeline.run(state=store)
    runs = {r["run_id"]: r for r in store.runs(pipeline="p")}
    assert len(runs) == 3
    assert runs["dead"]["status"] == "interrupted"
    assert runs[first]["status"] == "succeeded"
    assert runs[first]["rows_loaded"] == 2
    status = store.status()
    assert status[0]["rows_loaded"] == 2
    assert status[0]["checkpoint"] == {"next": 1}
    store.close()
