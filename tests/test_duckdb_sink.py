"""The DuckDB sink: data, dead letters and checkpoint commit together, or not at all."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from mendflow.batch import DEAD_LETTER_SCHEMA, Load
from mendflow.exceptions import MendflowError
from mendflow.sinks.duckdb import ERRORS, DuckDBSink


def _load(batch_id: str, rows: list[dict[str, object]], **kw: object) -> Load:
    return Load(
        pipeline="p", run_id="r1", batch_id=batch_id, data=pa.Table.from_pylist(rows),
        position={"at": batch_id}, **kw,  # type: ignore[arg-type]
    )


def _rows(db: Path, table: str = "t") -> list[tuple[object, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(f'SELECT * FROM "{table}" ORDER BY ALL').fetchall()
    finally:
        con.close()


def test_append_commits_rows_and_position_and_skips_a_batch_seen_before(tmp_path: Path) -> None:
    """A batch id already committed is not loaded again; the position is the one committed."""
    sink = DuckDBSink(tmp_path / "d.duckdb", table="t")
    assert sink.write(_load("b1", [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]))
    assert not sink.write(_load("b1", [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]))
    assert sink.position("p") == {"at": "b1"}
    sink.close()
    assert _rows(tmp_path / "d.duckdb") == [(1, "a"), (2, "b")]


def test_merge_replaces_rows_with_the_same_key(tmp_path: Path) -> None:
    """Merge upserts on the primary key across batches."""
    sink = DuckDBSink(tmp_path / "d.duckdb", table="t")
    merge = {"mode": "merge", "primary_key": ("id",)}
    sink.write(_load("b1", [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}], **merge))
    sink.write(_load("b2", [{"id": 2, "v": "z"}, {"id": 3, "v": "y"}], **merge))
    sink.close()
    assert _rows(tmp_path / "d.duckdb") == [(1, "a"), (2, "z"), (3, "y")]


def test_merge_on_a_composite_key(tmp_path: Path) -> None:
    """A primary key of two columns matches rows on both."""
    sink = DuckDBSink(tmp_path / "d.duckdb", table="t")
    merge = {"mode": "merge", "primary_key": ("k1", "k2")}
    sink.write(_load("b1", [{"k1": 1, "k2": "x", "v": 1}, {"k1": 1, "k2": "y", "v": 2}], **merge))
    sink.write(_load("b2", [{"k1": 1, "k2": "y", "v": 3}], **merge))
    sink.close()
    assert _rows(tmp_path / "d.duckdb") == [(1, "x", 1), (1, "y", 3)]


def test_replace_publishes_only_when_the_run_finishes(tmp_path: Path) -> None:
    """Replace stages the run; readers see the old table until finish swaps it in at once."""
    db = tmp_path / "d.duckdb"
    sink = DuckDBSink(db, table="t")
    sink.write(_load("g1", [{"id": 1}], mode="replace"))
    sink.finish("p", mode="replace")
    assert sink.position("p", mode="replace") == {}
    sink.write(_load("g1", [{"id": 7}], mode="replace"))
    sink.close()
    assert _rows(db) == [(1,)]
    sink = DuckDBSink(db, table="t")
    assert sink.position("p", mode="replace") == {"at": "g1"}
    sink.write(_load("g2", [{"id": 8}], mode="replace"))
    sink.finish("p", mode="replace")
    sink.close()
    assert _rows(db) == [(7,), (8,)]


def test_a_failure_before_commit_leaves_table_and_position_untouched(tmp_path: Path) -> None:
    """If anything fails inside the transaction, nothing of the batch is visible."""
    db = tmp_path / "d.duckdb"
    sink = DuckDBSink(db, table="t")
    sink.write(_load("b1", [{"id": 1}]))

    def boom() -> None:
        raise RuntimeError("killed before commit")

    with pytest.raises(RuntimeError):
        sink.write(_load("b2", [{"id": 2}]), on_staged=boom)
    assert sink.position("p") == {"at": "b1"}
    assert sink.write(_load("b2", [{"id": 2}]))
    sink.close()
    assert _rows(db) == [(1,), (2,)]


def test_a_first_batch_rolled_back_leaves_no_table_and_the_next_creates_it(tmp_path: Path) -> None:
    """The table made by a batch that never committed is gone; the next batch makes it again."""
    db = tmp_path / "d.duckdb"
    sink = DuckDBSink(db, table="t")

    def boom() -> None:
        raise RuntimeError("killed before commit")

    with pytest.raises(RuntimeError):
        sink.write(_load("b1", [{"id": 1}]), on_staged=boom)
    assert sink.write(_load("b1", [{"id": 1}]))
    sink.close()
    assert _rows(db) == [(1,)]


def test_dead_letters_commit_with_the_batch(tmp_path: Path) -> None:
    """Dead letters land in _mendflow_dead_letters in the batch's own transaction."""
    db = tmp_path / "d.duckdb"
    sink = DuckDBSink(db, table="t")
    dead = pa.Table.from_pylist(
        [{"row_index": 3, "stage": "coerce", "reason": "v: x is not DOUBLE", "record": b"{}",
          "format": "json"}],
        schema=DEAD_LETTER_SCHEMA,
    )
    sink.write(_load("b1", [{"id": 1}], dead_letters=dead))
    sink.close()
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT batch_id, row_index, reason FROM _mendflow_dead_letters").fetchall()
    con.close()
    assert rows == [("b1", 3, "v: x is not DOUBLE")]


def test_a_batch_with_an_unknown_column_is_refused_with_advice(tmp_path: Path) -> None:
    """A new column is never silently dropped: evolve adds it, freeze sets its rows aside."""
    sink = DuckDBSink(tmp_path / "d.duckdb", table="t")
    sink.write(_load("b1", [{"id": 1}], schema="freeze"))
    sink.write(_load("b2", [{"id": 2, "extra_col": 5}], schema="freeze"))
    sink.write(_load("b3", [{"id": 3, "extra_col": 6}]))
    assert sink.position("p") == {"at": "b3"}
    sink.close()
    assert _rows(tmp_path / "d.duckdb") == [(1, None), (3, 6)]
    con = duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True)
    reasons = con.execute("SELECT batch_id, reason FROM _mendflow_dead_letters").fetchall()
    con.close()
    assert reasons == [("b2", "column `extra_col` is not in table t (schema frozen)")]


def test_hostile_identifiers_are_only_names(tmp_path: Path) -> None:
    """A column and a table named like SQL injection are loaded as names and nothing else."""
    db = tmp_path / "d.duckdb"
    evil = 'x"; DROP TABLE orders; --'
    sink = DuckDBSink(db, table='orders"; DROP TABLE t; --')
    sink.write(_load("b1", [{"id": 1, evil: "v"}], mode="merge", primary_key=("id",)))
    sink.write(_load("b2", [{"id": 1, evil: "w"}], mode="merge", primary_key=("id",)))
    sink.close()
    con = duckdb.connect(str(db), read_only=True)
    columns = [r[0] for r in con.execute('DESCRIBE "orders""; DROP TABLE t; --"').fetchall()]
    assert columns == ["id", evil]
    assert con.execute('SELECT * FROM "orders""; DROP TABLE t; --"').fetchall() == [(1, "w")]
    con.close()


def test_every_duckdb_error_class_is_mapped() -> None:
    """Each exception class DuckDB exports has its own entry in the translation table."""
    mapped = {driver for driver, _ in ERRORS}
    exported = {
        obj for name in dir(duckdb)
        if isinstance(obj := getattr(duckdb, name), type) and issubclass(obj, duckdb.Error)
    }
    assert exported - mapped == set()
    assert all(issubclass(kind, MendflowError) for _, kind in ERRORS)
