"""The Parquet folder sink: whole files named by batch identity, then the checkpoint."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mendflow import config
from mendflow.batch import DEAD_LETTER_SCHEMA, Load
from mendflow.checks import UniqueKey
from mendflow.exceptions import (
    CheckFailed,
    ConfigError,
    DestinationError,
    DestinationUnavailable,
    ResourceExhausted,
)
from mendflow.sinks import _parquet_files as files
from mendflow.sinks import _parquet_state
from mendflow.sinks.parquet import ParquetSink
from tests._chains import CHAINS, REPLACE_CHAINS, run_child, write_drops
from tests.conftest import write_orders, write_pipeline


def _load(batch_id: str, rows: list[dict[str, Any]], **kw: Any) -> Load:
    return Load(pipeline="p", run_id="r1", batch_id=batch_id, data=pa.Table.from_pylist(rows),
                position={"at": batch_id}, **kw)


def _dead(*reasons: str) -> pa.Table:
    return pa.Table.from_pylist(
        [{"row_index": i, "stage": "coerce", "reason": r, "checks": None,
          "record": b'{"id": %d}' % i, "format": "json"} for i, r in enumerate(reasons)],
        schema=DEAD_LETTER_SCHEMA,
    )


def _query(sql: str) -> list[tuple[Any, ...]]:
    """Rows through Arrow: DuckDB's own fetch of a TIMESTAMPTZ needs pytz, not a dependency."""
    con = duckdb.connect()
    try:
        table = con.sql(sql).to_arrow_table()
        return list(zip(*(column.to_pylist() for column in table.columns), strict=True))
    finally:
        con.close()


def _rows(folder: Path, sub: str = "data") -> list[tuple[Any, ...]]:
    """Every row of the folder's files, sorted, as DuckDB reads the glob."""
    if not list((folder / sub).glob("*.parquet")):
        return []
    return _query(
        f"SELECT * FROM read_parquet('{folder / sub}/*.parquet', union_by_name = true) "
        "ORDER BY ALL"
    )


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*") if not p.name.startswith("."))


# -- exactly once -------------------------------------------------------------------------------


def test_append_writes_a_file_per_batch_and_skips_a_batch_seen_before(tmp_path: Path) -> None:
    """A batch id already committed is not written again; the position survives a new sink."""
    sink = ParquetSink(tmp_path / "lake")
    assert sink.position("p") == {}
    assert sink.write(_load("file:/in/a.jsonl@1#0", [{"id": 1}, {"id": 2}]))
    assert sink.write(_load("file:/in/a.jsonl@1#0", [{"id": 1}, {"id": 2}])) is None
    assert sink.write(_load("file:/in/a.jsonl@1#2", [{"id": 3}]))
    assert ParquetSink(tmp_path / "lake").position("p") == {"at": "file:/in/a.jsonl@1#2"}
    assert _rows(tmp_path / "lake") == [(1,), (2,), (3,)]
    assert _names(tmp_path / "lake" / "data") == sorted(
        files.file_name("p", f"file:/in/a.jsonl@1#{n}") for n in (0, 2))
    assert files.file_name("p", "file:/in/a.jsonl@1#0").startswith("file_in_a.jsonl_1_0-")
    assert files.file_name("p", "x") != files.file_name("q", "x")
    state = json.loads((tmp_path / "lake" / "_mendflow" / "p.json").read_text())
    assert [rows for _, rows in state["committed"]["batches"]] == [2, 1]


def test_polars_and_duckdb_read_the_folder_as_one_table(tmp_path: Path) -> None:
    """The documented readers: DuckDB's read_parquet glob and polars' scan_parquet."""
    sink = ParquetSink(tmp_path / "lake")
    sink.write(_load("b1", [{"id": 1, "v": "a"}]))
    sink.write(_load("b2", [{"id": 2, "v": "b"}]))
    frame = pl.scan_parquet(str(tmp_path / "lake" / "data" / "*.parquet")).collect()
    assert sorted(frame.rows()) == [(1, "a"), (2, "b")]


def test_a_failure_before_the_checkpoint_publishes_nothing(tmp_path: Path) -> None:
    """If on_staged (or anything before the checkpoint) fails, the batch's files are removed."""
    lake = tmp_path / "lake"
    sink = ParquetSink(lake)
    sink.write(_load("b1", [{"id": 1}]))

    def boom() -> None:
        raise RuntimeError("killed before the checkpoint")

    with pytest.raises(RuntimeError):
        sink.write(_load("b2", [{"id": 2}], dead_letters=_dead("bad")), on_staged=boom)
    assert sink.position("p") == {"at": "b1"}
    assert _rows(lake) == [(1,)]
    assert _names(lake / "dead_letters") == []
    assert not list(lake.rglob("*.tmp"))
    assert sink.write(_load("b2", [{"id": 2}]))
    assert _rows(lake) == [(1,), (2,)]


def test_a_file_no_checkpoint_lists_is_swept_when_the_next_run_starts(tmp_path: Path) -> None:
    """A killed run's file (renamed in, its checkpoint never written) and its temporary files go
    at the next run's start, even if the batches are cut differently now; others' files stay."""
    lake = tmp_path / "lake"
    sink = ParquetSink(lake)
    sink.write(_load("b1", [{"id": 1}]))
    orphan = lake / "data" / files.file_name("p", "b2-cut-differently")
    pq.write_table(pa.table({"id": [99]}), orphan)
    temp = lake / "data" / f".{files.tag('p')}.abc.tmp"
    temp.write_bytes(b"half a file")
    other = lake / "data" / files.file_name("other pipeline", "b9")
    pq.write_table(pa.table({"id": [7]}), other)
    assert sink.position("p") == {"at": "b1"}
    assert not orphan.exists()
    assert not temp.exists()
    assert other.exists()


def test_a_rewritten_batch_without_dead_letters_removes_its_old_dead_letter_file(
    tmp_path: Path,
) -> None:
    """The files of a batch match its last write: a dead-letter file of an uncommitted attempt
    does not outlive it."""
    lake = tmp_path / "lake"
    sink = ParquetSink(lake)
    stale = lake / "dead_letters" / files.file_name("p", "b1")
    stale.parent.mkdir(parents=True)
    pq.write_table(pa.table({"reason": ["old"]}), stale)
    sink.write(_load("b1", [{"id": 1}]))
    assert not stale.exists()


def test_dead_letters_are_files_with_their_origin(tmp_path: Path) -> None:
    """A batch's dead letters land in dead_letters/ under the batch's name, with pipeline, run,
    batch and time; a quarantined batch (no rows) writes no data file."""
    lake = tmp_path / "lake"
    sink = ParquetSink(lake)
    done = sink.write(Load(pipeline="p", run_id="r1", batch_id="b1", data=pa.table({}),
                           position={"at": "b1"}, dead_letters=_dead("bad", "worse")))
    assert done is not None
    assert (done.rows, done.dead_letters) == (0, 2)
    assert _names(lake / "data") == []
    got = _query(
        f"SELECT pipeline, run_id, batch_id, row_index, stage, reason, record, "
        f"first_seen IS NOT NULL FROM read_parquet('{lake}/dead_letters/*.parquet') ORDER BY 4"
    )
    assert got == [("p", "r1", "b1", 0, "coerce", "bad", b'{"id": 0}', True),
                   ("p", "r1", "b1", 1, "coerce", "worse", b'{"id": 1}', True)]


def test_a_blocking_check_that_fails_publishes_nothing(tmp_path: Path) -> None:
    """UniqueKey looks the batch's keys up across the folder's files; a duplicate is refused
    before any file is renamed in, and the checkpoint stays."""
    lake = tmp_path / "lake"
    sink = ParquetSink(lake)
    checks = (UniqueKey(("id",)),)
    sink.write(_load("b1", [{"id": 1}, {"id": 2}], checks=checks))
    with pytest.raises(CheckFailed, match="unique_key"):
        sink.write(_load("b2", [{"id": 2}, {"id": 3}], checks=checks))
    assert sink.position("p") == {"at": "b1"}
    assert _rows(lake) == [(1,), (2,)]
    assert sink.write(_load("b3", [{"id": 4}], checks=checks))


# -- modes --------------------------------------------------------------------------------------


def test_merge_is_refused_with_what_to_use_instead(tmp_path: Path) -> None:
    """A folder of files is append or replace; merge is a configuration error, nothing written."""
    sink = ParquetSink(tmp_path / "lake")
    with pytest.raises(ConfigError, match="append or replace"):
        sink.position("p", mode="merge")
    with pytest.raises(ConfigError, match="database destination"):
        sink.write(_load("b1", [{"id": 1}], mode="merge", primary_key=("id",)))
    assert not (tmp_path / "lake").exists()


def test_replace_publishes_only_when_the_run_finishes(tmp_path: Path) -> None:
    """Replace stages the run in _staging/; data/ keeps the old files until finish swaps the
    folders; a run resumed by a new sink continues the staging."""
    lake = tmp_path / "lake"
    sink = ParquetSink(lake)
    sink.write(_load("g1", [{"id": 1}], mode="replace"))
    sink.finish("p", mode="replace")
    assert sink.position("p", mode="replace") == {}
    sink.write(_load("g1", [{"id": 7}], mode="replace"))
    assert _rows(lake) == [(1,)]
    sink = ParquetSink(lake)
    assert sink.position("p", mode="replace") == {"at": "g1"}
    sink.write(_load("g2", [{"id": 8}], mode="replace"))
    assert _rows(lake) == [(1,)]
    sink.finish("p", mode="replace")
    assert _rows(lake) == [(7,), (8,)]
    assert not (lake / "_staging").exists()
    assert sink.position("p") == {"at": "g2"}


def test_replace_with_an_empty_source_publishes_an_empty_folder(tmp_path: Path) -> None:
    """A replace run that staged nothing replaces the table with nothing."""
    lake = tmp_path / "lake"
    sink = ParquetSink(lake)
    sink.write(_load("g1", [{"id": 1}], mode="replace"))
    sink.finish("p", mode="replace")
    assert sink.position("p", mode="replace") == {}
    sink.finish("p", mode="replace")
    assert _rows(lake) == []


def test_a_finish_interrupted_after_the_swap_is_completed_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the checkpoint cannot be written after the folders were swapped, the next run sees
    the staged generation published and commits it instead of staging again."""
    lake = tmp_path / "lake"
    sink = ParquetSink(lake)
    sink.write(_load("g1", [{"id": 1}], mode="replace"))
    save = _parquet_state.save

    def failing(*args: Any) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(_parquet_state, "save", failing)
    with pytest.raises(DestinationUnavailable, match="I/O error"):
        sink.finish("p", mode="replace")
    monkeypatch.setattr(_parquet_state, "save", save)
    assert _rows(lake) == [(1,)]
    assert sink.position("p", mode="replace") == {}
    assert sink.position("p") == {"at": "g1"}
    assert _rows(lake) == [(1,)]
    assert not (lake / "_staging").exists()


def test_a_yaml_pipeline_writes_the_folder(tmp_path: Path) -> None:
    """destination: {type: parquet, path} builds the sink; a second run adds nothing."""
    drops = tmp_path / "drops"
    drops.mkdir()
    write_orders(drops / "a.jsonl", start=1, count=50, seed=1, bad_every=10)
    path = write_pipeline(
        tmp_path / "p.yaml", name="orders",
        source={"type": "files", "path": str(drops / "*.jsonl")},
        destination={"type": "parquet", "path": "lake"},
        columns={"amount": "double"},
    )
    config.load(path).pipeline.run()
    config.load(path).pipeline.run()
    lake = tmp_path / "lake"
    assert len(_rows(lake)) == 45
    assert len(_rows(lake, "dead_letters")) == 5
    assert (lake / "_mendflow" / "orders.json").exists()


# -- errors -------------------------------------------------------------------------------------


def test_a_full_disk_is_resource_exhausted_and_a_file_in_the_way_a_destination_error(
    tmp_path: Path,
) -> None:
    """ENOSPC (a real one, from /dev/full) asks for room; a path through a file cannot be a
    folder: permanent; every errno in the table maps to a mendflow class."""
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError, match="No space left") as full:
            os.write(fd, b"x")
    finally:
        os.close(fd)
    error = files.translate(full.value, "writing", dependency="lake")
    assert isinstance(error, ResourceExhausted)
    assert "free disk space" in str(error)
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(DestinationError, match="Not a directory"):
        ParquetSink(tmp_path / "file" / "lake").write(_load("b1", [{"id": 1}]))
    assert all(isinstance(files.translate(OSError(code, "x"), "w", dependency="d"), kind)
               for code, kind in files.ERRNOS.items())


def test_a_corrupt_file_met_by_the_audit_is_a_destination_error(tmp_path: Path) -> None:
    """UniqueKey reads the folder's files; one that is not Parquet fails the batch, translated."""
    lake = tmp_path / "lake"
    sink = ParquetSink(lake)
    sink.write(_load("b1", [{"id": 1}]))
    (lake / "data" / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(DestinationError, match=r"broken\.parquet"):
        sink.write(_load("b2", [{"id": 2}], checks=(UniqueKey(("id",)),)))
    assert sink.position("p") == {"at": "b1"}


def test_another_process_holding_the_pipeline_is_destination_unavailable(tmp_path: Path) -> None:
    """The pipeline's lock held elsewhere: the call fails as retryable, and works once freed."""
    sink = ParquetSink(tmp_path / "lake")
    sink.position("p")
    fd = os.open(tmp_path / "lake" / "_mendflow" / "p.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(DestinationUnavailable, match="another process"):
            sink.write(_load("b1", [{"id": 1}]))
    finally:
        os.close(fd)
    assert sink.write(_load("b1", [{"id": 1}]))


# -- crash --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def drops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The crash tests' three files (``tests/_chains.py``)."""
    return write_drops(tmp_path_factory.mktemp("crash") / "drops")


def _pipeline(folder: Path, drops: Path, mode: str) -> Path:
    return write_pipeline(
        folder / "pipeline.yaml", name=f"crash_{mode}",
        source={"type": "files", "path": str(drops / "*.jsonl"), "batch_size": 1000},
        destination={"type": "parquet", "path": str(folder / "lake")},
        write_mode=mode, columns={"amount": "double", "updated_at": "timestamptz"},
    )


def _hash(lake: Path, sub: str, columns: str) -> tuple[int, str]:
    if not list((lake / sub).glob("*.parquet")):
        return 0, ""
    [(count, digest)] = _query(
        f"SELECT count(*), md5(string_agg(h, ',' ORDER BY h)) FROM (SELECT md5({columns}) AS h "
        f"FROM read_parquet('{lake / sub}/*.parquet', union_by_name = true) t)"
    )
    return int(count), str(digest)


def _outcome(folder: Path) -> tuple[tuple[int, str], tuple[int, str]]:
    lake = folder / "lake"
    dead = "concat_ws('|', pipeline, batch_id, row_index, stage, reason, hex(record))"
    return _hash(lake, "data", "CAST(t AS VARCHAR)"), _hash(lake, "dead_letters", dead)


@pytest.mark.parametrize("mode", ["append", "replace"])
def test_kills_at_a_dozen_points_then_a_rerun_match_a_fault_free_run(
    mode: str, drops: Path, tmp_path: Path
) -> None:
    """SIGKILLs of real processes between a batch's rename and its checkpoint
    (batch.staged), right after it, while reading and transforming: the final run leaves
    exactly the fault-free files' rows and dead letters, and no temporary file."""
    reference = tmp_path / "reference"
    reference.mkdir()
    assert run_child(_pipeline(reference, drops, mode)) == 0
    expected = _outcome(reference)
    assert expected[0][0] == 9000 - 9
    assert expected[1][0] == 9
    for number, chain in enumerate(REPLACE_CHAINS if mode == "replace" else CHAINS):
        folder = tmp_path / f"chain{number}"
        folder.mkdir()
        pipeline = _pipeline(folder, drops, mode)
        for stage, nth in chain:
            assert run_child(pipeline, stage, nth) == -signal.SIGKILL, (stage, nth)
        assert run_child(pipeline) == 0
        assert _outcome(folder) == expected, chain
        assert not list((folder / "lake").rglob("*.tmp"))
        shutil.rmtree(folder)
