"""Files are read incrementally: a file loaded is not read again; a new one is, and only it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mendflow import ConfigError, DuckDBSink, FileSource, Pipeline, SchemaMismatch
from tests.conftest import table_hash, write_orders


def _pipeline(folder: Path, db: Path, pattern: str = "*.jsonl", **kw: object) -> Pipeline:
    return Pipeline(
        name="files", source=FileSource(str(folder / pattern), batch_size=400),
        destination=DuckDBSink(db, table="orders"), **kw,  # type: ignore[arg-type]
    )


def test_second_run_loads_nothing_and_a_new_file_loads_alone(
    orders_dir: Path, tmp_path: Path
) -> None:
    """Run 1 loads all files; run 2 nothing; after a new file lands, run 3 loads just it."""
    db = tmp_path / "d.duckdb"
    first = _pipeline(orders_dir, db).run()
    assert (first.rows_read, first.rows_loaded) == (3000, 3000)
    assert _pipeline(orders_dir, db).run().rows_read == 0
    write_orders(orders_dir / "orders-9.jsonl", start=9001, count=250)
    third = _pipeline(orders_dir, db).run()
    assert (third.rows_read, third.rows_loaded) == (250, 250)
    assert table_hash(db, "orders")[0] == 3250


def test_a_changed_file_is_read_again(orders_dir: Path, tmp_path: Path) -> None:
    """A file whose size or modification time changed counts as new."""
    db = tmp_path / "d.duckdb"
    _pipeline(orders_dir, db, write_mode="merge", primary_key=("id",)).run()
    before = table_hash(db, "orders")
    target = orders_dir / "orders-0.jsonl"
    write_orders(target, start=1, count=1200, seed=5)
    os.utime(target, ns=(1, 1))
    again = _pipeline(orders_dir, db, write_mode="merge", primary_key=("id",)).run()
    assert again.rows_read == 1200
    after = table_hash(db, "orders")
    assert after[0] == 3000  # ids 1..1200 already existed: merged, not added
    assert after[1] != before[1]


def test_reading_resumes_mid_file_with_the_same_batch_ids(orders_dir: Path) -> None:
    """From a position inside a file, the source yields the rest with the ids a full read gives."""
    source = FileSource(str(orders_dir / "*.jsonl"), batch_size=400)
    every = list(source.read({}))
    assert [b.data.num_rows for b in every[:3]] == [400, 400, 200]
    resumed = list(source.read(every[1].position))
    assert [b.id for b in resumed] == [b.id for b in every[2:]]
    assert sum(b.data.num_rows for b in every) == 3000
    assert list(source.read(every[-1].position)) == []


def test_csv_and_parquet_files_are_read(tmp_path: Path) -> None:
    """CSV and Parquet are recognised by their suffix and loaded."""
    (tmp_path / "a.csv").write_text("id,name\n1,x\n2,y\n", encoding="utf-8")
    pq.write_table(pa.table({"id": [3, 4], "name": ["z", "w"]}), tmp_path / "b.parquet")
    db = tmp_path / "d.duckdb"
    for pattern in ("*.csv", "*.parquet"):
        Pipeline(name=f"p{pattern[2:]}", source=FileSource(str(tmp_path / pattern)),
                 destination=DuckDBSink(db, table="t")).run()
    assert table_hash(db, "t")[0] == 4


def test_a_missing_file_or_folder_is_a_config_error(tmp_path: Path) -> None:
    """A path that does not exist says so, with the path."""
    with pytest.raises(ConfigError, match="file not found"):
        list(FileSource(str(tmp_path / "nope.jsonl")).read({}))
    with pytest.raises(ConfigError, match="folder not found"):
        list(FileSource(str(tmp_path / "nowhere" / "*.csv")).read({}))


def test_a_file_younger_than_min_age_waits_for_a_later_run(orders_dir: Path) -> None:
    """A file still being written (modified just now) is not read yet; once settled, it is."""
    young = orders_dir / "orders-0.jsonl"
    old = time.time() - 120
    for path in orders_dir.iterdir():
        os.utime(path, (old, old))
    os.utime(young, None)
    source = FileSource(str(orders_dir / "*.jsonl"), min_age_s=60)
    keys = {key for b in source.read({}) for key in b.position["files"]}
    assert keys == {"orders-1.jsonl", "orders-2.jsonl"}
    os.utime(young, (old, old))
    assert {key for b in source.read({}) for key in b.position["files"]} == {
        "orders-0.jsonl", "orders-1.jsonl", "orders-2.jsonl"}


def test_an_empty_folder_reads_nothing(tmp_path: Path) -> None:
    """A drop folder with no files yet is not an error."""
    assert list(FileSource(str(tmp_path / "*.jsonl")).read({})) == []


def _orders(count: int) -> list[dict[str, object]]:
    return [{"id": i, "name": f"n{i}", "amount": i + 0.5} for i in range(1, count + 1)]


def test_a_json_array_file_is_read_whole_and_resumes_by_row(tmp_path: Path) -> None:
    """A ``.json`` file holding one pretty-printed array yields its records, not a reject per
    line; from a position inside it, the rest comes with the ids a full read gives."""
    path = tmp_path / "a.json"
    path.write_text(json.dumps(_orders(25), indent=2), encoding="utf-8")
    source = FileSource(path, batch_size=10)
    every = list(source.read({}))
    assert [(b.data.num_rows, b.rejects.num_rows) for b in every] == [(10, 0), (10, 0), (5, 0)]
    assert [i for b in every for i in b.data["id"].to_pylist()] == list(range(1, 26))
    resumed = list(source.read(every[0].position))
    assert [b.id for b in resumed] == [b.id for b in every[1:]]
    assert [b.data for b in resumed] == [b.data for b in every[1:]]
    assert list(source.read(every[-1].position)) == []


def test_a_pretty_printed_json_object_is_one_record(tmp_path: Path) -> None:
    """A ``.json`` file holding one object over several lines is one row (declared columns read
    as text); the same text in a ``.jsonl`` file stays line by line, each line a reject."""
    text = json.dumps({"id": 7, "amount": 12.5, "tags": ["a", "b"]}, indent=2)
    (tmp_path / "a.json").write_text(text, encoding="utf-8")
    (tmp_path / "a.jsonl").write_text(text, encoding="utf-8")
    batches = list(FileSource(tmp_path / "a.json").reading_as_text(["amount"]).read({}))
    assert [b.data.to_pylist() for b in batches] == [
        [{"id": 7, "amount": "12.5", "tags": ["a", "b"]}]]
    lines = list(FileSource(tmp_path / "a.jsonl").read({}))
    assert sum(b.data.num_rows for b in lines) == 0
    assert sum(b.rejects.num_rows for b in lines) == len(text.splitlines())


def test_json_lines_in_a_json_file_stay_line_by_line(tmp_path: Path) -> None:
    """A ``.json`` file of JSON lines is read as JSON lines, even when its first line is broken
    (that line alone is a reject)."""
    path = tmp_path / "a.json"
    lines = [json.dumps(o).encode() for o in _orders(3)]
    path.write_bytes(b"\n".join([b'{"id": 0, "na', *lines]) + b"\n")
    batches = list(FileSource(path).read({}))
    assert [i for b in batches for i in b.data["id"].to_pylist()] == [1, 2, 3]
    assert [r for b in batches for r in b.rejects["record"].to_pylist()] == [b'{"id": 0, "na']


def test_a_malformed_json_document_fails_the_file_saying_what_to_do(tmp_path: Path) -> None:
    """A broken document cannot be split into records: the read fails naming the file and
    saying to fix it or convert it to JSON lines, whether the break is found at the start or
    only while streaming its records."""
    small, large = tmp_path / "small.json", tmp_path / "large.json"
    small.write_text(json.dumps(_orders(3), indent=2)[:-30], encoding="utf-8")
    large.write_text(json.dumps(_orders(30_000))[:-30], encoding="utf-8")
    for path in (small, large):
        with pytest.raises(SchemaMismatch, match="convert it to JSON lines") as caught:
            list(FileSource(path, batch_size=1000).read({}))
        assert str(path) in str(caught.value)
        assert "Malformed JSON" in str(caught.value)
