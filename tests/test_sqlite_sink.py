"""The SQLite sink: data, dead letters and checkpoint commit together, or not at all."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import io
import json
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from click.testing import CliRunner

from mendflow import config
from mendflow._cli_dlq import dlq
from mendflow._cli_schema import schema
from mendflow.batch import DEAD_LETTER_SCHEMA, Load
from mendflow.checks import UniqueKey
from mendflow.deadletter import Filter, replay
from mendflow.exceptions import (
    BadData,
    CheckFailed,
    DestinationError,
    DestinationUnavailable,
    MendflowError,
    ResourceExhausted,
)
from mendflow.sinks._sqlite_errors import CLASSES, CODES, kind_of, translate
from mendflow.sinks.sqlite import SQLiteSink
from tests._chains import CHAINS, REPLACE_CHAINS, run_child, write_drops
from tests.conftest import write_orders, write_pipeline

FIX = "SELECT * REPLACE (coalesce(TRY_CAST(amount AS DOUBLE), -1.0) AS amount) FROM batch"


def _load(batch_id: str, rows: list[dict[str, Any]], **kw: Any) -> Load:
    return Load(pipeline="p", run_id="r1", batch_id=batch_id, data=pa.Table.from_pylist(rows),
                position={"at": batch_id}, **kw)


def _dead(*reasons: str) -> pa.Table:
    return pa.Table.from_pylist(
        [{"row_index": i, "stage": "coerce", "reason": r, "checks": json.dumps(
            [{"check": "type", "column": "v", "message": r}]), "record": b'{"id": %d}' % i,
          "format": "json"} for i, r in enumerate(reasons)],
        schema=DEAD_LETTER_SCHEMA,
    )


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SQLiteSink]:
    """A sink on a fresh file, table ``t``, closed after the test."""
    made = SQLiteSink(tmp_path / "d.sqlite", table="t")
    yield made
    made.close()


# -- exactly once, modes ------------------------------------------------------------------------


def test_append_commits_rows_and_position_and_skips_a_batch_seen_before(
    sink: SQLiteSink, tmp_path: Path
) -> None:
    """A batch id already committed is not loaded again; the position is the one committed."""
    rows = [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]
    assert sink.write(_load("b1", rows))
    assert sink.write(_load("b1", rows)) is None
    assert sink.position("p") == {"at": "b1"}
    sink.close()
    assert SQLiteSink(tmp_path / "d.sqlite", table="t").position("p") == {"at": "b1"}
    assert _query(tmp_path / "d.sqlite", "SELECT * FROM t ORDER BY id") == [(1, "a"), (2, "b")]
    assert _query(tmp_path / "d.sqlite", "PRAGMA journal_mode") == [("wal",)]


def test_merge_upserts_on_a_composite_key_the_table_was_made_unique_on(
    sink: SQLiteSink, tmp_path: Path
) -> None:
    """Merge replaces whole rows with the same key (columns the batch lacks become NULL)."""
    merge: dict[str, Any] = {"mode": "merge", "primary_key": ("k1", "k2")}
    sink.write(_load("b1", [{"k1": 1, "k2": "x", "v": 1, "w": "keep?"},
                            {"k1": 1, "k2": "y", "v": 2, "w": "w"}], **merge))
    sink.write(_load("b2", [{"k1": 1, "k2": "y", "v": 3}, {"k1": 2, "k2": "x", "v": 4}], **merge))
    db = tmp_path / "d.sqlite"
    assert _query(db, "SELECT * FROM t ORDER BY k1, k2") == [
        (1, "x", 1, "keep?"), (1, "y", 3, None), (2, "x", 4, None)]
    [(ddl,)] = _query(db, "SELECT sql FROM sqlite_master WHERE name = 't'")
    assert 'UNIQUE ("k1", "k2")' in ddl


def test_merge_into_a_table_made_without_a_key_deletes_then_inserts(
    sink: SQLiteSink, tmp_path: Path
) -> None:
    """A table an append run made has no unique key: merge replaces the batch's keys anyway."""
    sink.write(_load("a1", [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]))
    sink.write(_load("m1", [{"id": 2, "v": "z"}], mode="merge", primary_key=("id",)))
    assert _query(tmp_path / "d.sqlite", "SELECT * FROM t ORDER BY id") == [(1, "a"), (2, "z")]


def test_replace_publishes_only_when_the_run_finishes(tmp_path: Path) -> None:
    """Replace stages the run; readers see the old table until finish swaps it in at once."""
    db = tmp_path / "d.sqlite"
    sink = SQLiteSink(db, table="t")
    sink.write(_load("g1", [{"id": 1}], mode="replace"))
    sink.finish("p", mode="replace")
    assert sink.position("p", mode="replace") == {}
    sink.write(_load("g1", [{"id": 7}], mode="replace"))
    sink.close()
    assert _query(db, "SELECT * FROM t") == [(1,)]
    sink = SQLiteSink(db, table="t")
    assert sink.position("p", mode="replace") == {"at": "g1"}
    sink.write(_load("g2", [{"id": 8}], mode="replace"))
    sink.finish("p", mode="replace")
    sink.close()
    assert _query(db, "SELECT * FROM t ORDER BY id") == [(7,), (8,)]
    assert _query(db, "SELECT name FROM sqlite_master WHERE name LIKE '_mendflow_stage%'") == []


def test_a_failure_before_commit_leaves_table_dead_letters_and_position_untouched(
    sink: SQLiteSink, tmp_path: Path
) -> None:
    """If anything fails inside the transaction, nothing of the batch is visible."""
    sink.write(_load("b1", [{"id": 1}]))

    def boom() -> None:
        raise RuntimeError("killed before commit")

    with pytest.raises(RuntimeError):
        sink.write(_load("b2", [{"id": 2, "new": "x"}], dead_letters=_dead("bad")),
                   on_staged=boom)
    db = tmp_path / "d.sqlite"
    assert sink.position("p") == {"at": "b1"}
    assert _query(db, "SELECT count(*) FROM _mendflow_dead_letters") == [(0,)]
    assert [r[1] for r in _query(db, "PRAGMA table_info(t)")] == ["id"]
    assert sink.write(_load("b2", [{"id": 2}]))
    assert _query(db, "SELECT * FROM t ORDER BY id") == [(1,), (2,)]


def test_a_first_batch_rolled_back_leaves_no_table_and_the_next_creates_it(
    sink: SQLiteSink, tmp_path: Path
) -> None:
    """The table made by a batch that never committed is gone; the next batch makes it again."""

    def boom() -> None:
        raise RuntimeError("killed before commit")

    with pytest.raises(RuntimeError):
        sink.write(_load("b1", [{"id": 1}]), on_staged=boom)
    assert _query(tmp_path / "d.sqlite", "SELECT name FROM sqlite_master WHERE name = 't'") == []
    assert sink.write(_load("b1", [{"id": 1}]))
    assert _query(tmp_path / "d.sqlite", "SELECT * FROM t") == [(1,)]


# -- types ------------------------------------------------------------------------------------


def test_arrow_types_become_sqlite_affinities_and_iso_json_or_exact_text(
    sink: SQLiteSink, tmp_path: Path
) -> None:
    """Integers, booleans and floats stay numbers; times are ISO 8601 text (UTC with Z when
    zoned); decimals exact text; nested values JSON; bytes BLOB; an all-null column waits."""
    paris = dt.timezone(dt.timedelta(hours=1))
    sink.write(_load("b1", [{
        "i": 1, "ok": True, "f": 1.5, "s": "é",
        "ts": dt.datetime(2026, 1, 2, 4, 5, 6, tzinfo=paris),
        "naive": dt.datetime(2026, 1, 2, 3, 4, 5, 123456), "day": dt.date(2026, 1, 2),
        "d": decimal.Decimal("12.50"), "n": {"x": [1, 2]}, "b": b"\x00\xff", "nothing": None,
    }]))
    db = tmp_path / "d.sqlite"
    assert [(r[1], r[2]) for r in _query(db, "PRAGMA table_info(t)")] == [
        ("i", "INTEGER"), ("ok", "INTEGER"), ("f", "REAL"), ("s", "TEXT"), ("ts", "TEXT"),
        ("naive", "TEXT"), ("day", "TEXT"), ("d", "TEXT"), ("n", "TEXT"), ("b", "BLOB")]
    assert _query(db, "SELECT * FROM t") == [(
        1, 1, 1.5, "é", "2026-01-02T03:05:06.000000Z", "2026-01-02T03:04:05.123456",
        "2026-01-02", "12.50", '{"x":[1,2]}', b"\x00\xff")]
    assert _query(db, "SELECT datetime(ts), json_extract(n, '$.x[1]') FROM t") == [
        ("2026-01-02 03:05:06", 2)]


def test_hostile_identifiers_are_only_names(tmp_path: Path) -> None:
    """A column and a table named like SQL injection are loaded as names and nothing else."""
    db = tmp_path / "d.sqlite"
    evil = 'x"; DROP TABLE orders; --'
    sink = SQLiteSink(db, table='orders"; DROP TABLE t; --')
    sink.write(_load("b1", [{"id": 1, evil: "v"}], mode="merge", primary_key=("id",)))
    sink.write(_load("b2", [{"id": 1, evil: "w", "n'ew": 2}], mode="merge", primary_key=("id",)))
    sink.close()
    assert [r[1] for r in _query(db, 'PRAGMA table_info("orders""; DROP TABLE t; --")')] == [
        "id", evil, "n'ew"]
    assert _query(db, 'SELECT * FROM "orders""; DROP TABLE t; --"') == [(1, "w", 2)]


# -- schema drift -----------------------------------------------------------------------------


def test_evolve_adds_new_columns_and_records_a_version(sink: SQLiteSink, tmp_path: Path) -> None:
    """A new column is added by ALTER TABLE in the load's transaction; the history says so."""
    sink.write(_load("b1", [{"id": 1}]))
    sink.write(_load("b2", [{"id": 2, "score": 1.5, "tag": "x"}]))
    assert _query(tmp_path / "d.sqlite", "SELECT * FROM t ORDER BY id") == [
        (1, None, None), (2, 1.5, "x")]
    versions = sink.schema_history()
    assert [v.version for v in versions] == [1, 2]
    assert [c.as_dict() for c in versions[1].changes] == [
        {"change": "added", "column": "score", "from": None, "to": "REAL"},
        {"change": "added", "column": "tag", "from": None, "to": "TEXT"}]
    assert {c.name: c.type for c in versions[1].columns} == {
        "id": "INTEGER", "score": "REAL", "tag": "TEXT"}


def test_freeze_sets_aside_rows_with_a_new_column_and_quarantines_a_misfit_batch(
    sink: SQLiteSink, tmp_path: Path
) -> None:
    """Under freeze no column is added: a row with a value in one is a dead letter, and a
    batch with a value that does not fit its column goes whole to the dead letters."""
    sink.write(_load("b1", [{"id": 1}], schema="freeze"))
    done = sink.write(_load("b2", [{"id": 2, "extra": 5}, {"id": 3, "extra": None}],
                            schema="freeze"))
    assert done is not None
    assert (done.rows, done.dead_letters) == (1, 1)
    done = sink.write(_load("b3", [{"id": 4.0}, {"id": 4.5}], schema="freeze"))
    assert done is not None
    assert (done.rows, done.dead_letters) == (0, 2)
    db = tmp_path / "d.sqlite"
    assert _query(db, "SELECT * FROM t ORDER BY id") == [(1,), (3,)]
    letters = sink.dead_letters().list()
    assert [(x.batch_id, x.stage) for x in letters] == [
        ("b2", "load"), ("b3", "quarantine"), ("b3", "quarantine")]
    assert letters[0].reason == "column `extra` is not in table t (schema frozen)"
    assert json.loads(letters[0].record) == {"id": 2, "extra": 5}
    assert "schema is frozen" in letters[1].reason
    assert sink.position("p") == {"at": "b3"}


def test_evolve_sets_aside_only_values_that_do_not_fit_their_column(
    sink: SQLiteSink, tmp_path: Path
) -> None:
    """4.0 fits an INTEGER column (stored as 4), 4.5 and "x" do not; text that parses does."""
    sink.write(_load("b1", [{"id": 1, "n": 10}]))
    sink.write(_load("b2", [{"id": 2, "n": 4.0}, {"id": 3, "n": 4.5}]))
    sink.write(_load("b3", [{"id": 4, "n": "7"}, {"id": 5, "n": "x"}]))
    db = tmp_path / "d.sqlite"
    assert _query(db, "SELECT id, n, typeof(n) FROM t ORDER BY id") == [
        (1, 10, "integer"), (2, 4, "integer"), (4, 7, "integer")]
    letters = sink.dead_letters().list()
    assert [json.loads(x.record)["id"] for x in letters] == [3, 5]
    assert all(x.stage == "load" and "column `n`" in x.reason for x in letters)


def test_values_sqlite_cannot_hold_in_their_column_are_set_aside(
    sink: SQLiteSink, tmp_path: Path
) -> None:
    """An unsigned value beyond 64-bit INTEGER, or a nested value meeting an INTEGER column,
    becomes a dead letter instead of failing the bind or landing as text."""
    big = pa.table({"u": pa.array([1, 2**64 - 1], pa.uint64())})
    nested = pa.table({"u": pa.array([{"a": 1}], pa.struct([("a", pa.int64())]))})
    for number, data in enumerate((big, nested)):
        sink.write(Load(pipeline="p", run_id="r", batch_id=f"b{number}", data=data,
                        position={"at": number}))
    assert _query(tmp_path / "d.sqlite", "SELECT * FROM t") == [(1,)]
    assert [json.loads(x.record)["u"] for x in sink.dead_letters().list()] == [
        2**64 - 1, '{"a":1}']


def test_discard_columns_drops_the_new_column(sink: SQLiteSink, tmp_path: Path) -> None:
    """discard_columns keeps the table's column set and loads the rest of the row."""
    sink.write(_load("b1", [{"id": 1}], schema="discard_columns"))
    sink.write(_load("b2", [{"id": 2, "extra": 5}], schema="discard_columns"))
    assert _query(tmp_path / "d.sqlite", "SELECT * FROM t ORDER BY id") == [(1,), (2,)]


# -- dead letters and checks --------------------------------------------------------------------


def test_dead_letters_commit_with_the_batch_and_the_store_lists_purges_and_exports(
    sink: SQLiteSink,
) -> None:
    """Dead letters land in _mendflow_dead_letters in the batch's transaction; the store
    filters them by pipeline, check, stage, time, ids and limit."""
    sink.write(_load("b1", [{"id": 1}], dead_letters=_dead("v: x is not DOUBLE", "v: y")))
    store = sink.dead_letters()
    letters = store.list()
    assert [(x.batch_id, x.row_index, x.attempts, x.stage) for x in letters] == [
        ("b1", 0, 1, "coerce"), ("b1", 1, 1, "coerce")]
    first, second = letters
    assert first.first_seen == first.last_seen > 1e9
    assert store.list(Filter(check="type")) == letters
    assert store.list(Filter(check="range")) == []
    assert store.list(Filter(pipeline="other")) == []
    assert store.list(Filter(since=first.last_seen - 60, until=first.last_seen + 60)) == letters
    assert store.list(Filter(since=first.last_seen + 60)) == []
    assert store.list(Filter(limit=1)) == [first]
    assert store.get(second.id) == second
    assert store.count(Filter(), min_attempts=1) == 2
    store.tried([first.id])
    assert store.count(Filter(), min_attempts=2) == 1
    assert [len(chunk) for chunk in store.pending(Filter(), max_attempts=2, size=5)] == [1]
    out = io.StringIO()
    assert store.export(Filter(), out) == 2
    assert json.loads(out.getvalue().splitlines()[0])["record"] == '{"id": 0}'
    assert store.purge(Filter(ids=(first.id,))) == 1
    assert store.list() == [second]


def test_a_replay_settles_the_store_in_the_load_transaction(sink: SQLiteSink) -> None:
    """A replay load removes the records it loaded and updates those that failed again."""
    sink.write(_load("b1", [{"id": 0}], dead_letters=_dead("a", "b", "c")))
    ids = tuple(x.id for x in sink.dead_letters().list())
    again = _dead("still bad")  # row 0 of the replayed batch: the first replayed record
    replayed = Load(pipeline="p", run_id="r2", batch_id="replay:x", data=pa.Table.from_pylist(
        [{"id": 2}, {"id": 3}]), position=None, dead_letters=again, replay_ids=ids)
    sink.write(replayed)
    [left] = sink.dead_letters().list()
    assert (left.id, left.attempts, left.reason) == (ids[0], 2, "still bad")
    assert sink.position("p") == {"at": "b1"}


def test_a_blocking_check_that_fails_rolls_the_batch_back(sink: SQLiteSink) -> None:
    """UniqueKey looks the batch's keys up in the table; a duplicate rolls everything back."""
    checks = (UniqueKey(("id",)),)
    sink.write(_load("b1", [{"id": 1}, {"id": 2}], checks=checks))
    with pytest.raises(CheckFailed, match="unique_key"):
        sink.write(_load("b2", [{"id": 2}, {"id": 3}], checks=checks))
    assert sink.position("p") == {"at": "b1"}
    assert sink.write(_load("b3", [{"id": 4}], checks=checks))


def test_a_yaml_pipeline_loads_sqlite_and_the_dlq_and_schema_commands_read_it(
    tmp_path: Path,
) -> None:
    """destination: {type: sqlite} builds the sink; replay after the fix loads each record once;
    ``mendflow dlq list`` and ``mendflow schema history`` work on the file."""
    drops = tmp_path / "drops"
    drops.mkdir()
    write_orders(drops / "a.jsonl", start=1, count=50, seed=1, bad_every=10)
    path = write_pipeline(
        tmp_path / "p.yaml", name="orders",
        source={"type": "files", "path": str(drops / "*.jsonl")},
        destination={"type": "sqlite", "path": "w.sqlite", "table": "orders"},
        columns={"amount": "double"},
    )
    config.load(path).pipeline.run()
    db = tmp_path / "w.sqlite"
    assert _query(db, "SELECT count(*) FROM orders") == [(45,)]
    listed = CliRunner().invoke(dlq, ["list", str(path), "--json"], catch_exceptions=False)
    assert sorted(json.loads(x["record"])["id"] for x in json.loads(listed.output)) == [
        10, 20, 30, 40, 50]
    history = CliRunner().invoke(schema, ["history", str(path), "--json"],
                                 catch_exceptions=False)
    assert json.loads(history.output)[0]["columns"]["amount"] == "REAL"
    assert replay(config.load(path).pipeline).loaded == 0
    write_pipeline(path, **{**yaml.safe_load(path.read_text()), "columns": {"amount": "varchar"},
                            "transforms": [{"sql": FIX}]})
    assert replay(config.load(path).pipeline).loaded == 5
    assert _query(db, "SELECT count(*), count(DISTINCT id) FROM orders") == [(50, 50)]
    assert _query(db, "SELECT count(*) FROM _mendflow_dead_letters") == [(0,)]


# -- errors -----------------------------------------------------------------------------------


def test_every_sqlite_result_code_and_exception_class_is_mapped() -> None:
    """Each primary result code that is an error, and each driver exception class, has its own
    entry in the translation tables."""
    primary = {getattr(sqlite3, n) for n in dir(sqlite3)
               if n.startswith("SQLITE_") and isinstance(getattr(sqlite3, n), int)
               and "_" not in n.removeprefix("SQLITE_")}
    errors = primary - {sqlite3.SQLITE_OK, sqlite3.SQLITE_ROW, sqlite3.SQLITE_DONE,
                        sqlite3.SQLITE_DENY, sqlite3.SQLITE_IGNORE}
    actions = {getattr(sqlite3, f"SQLITE_{n}") for n in (
        "ALTER_TABLE", "ANALYZE", "ATTACH", "DELETE", "DETACH", "FUNCTION", "INSERT", "PRAGMA",
        "READ", "RECURSIVE", "REINDEX", "SAVEPOINT", "SELECT", "TRANSACTION", "UPDATE")}
    assert errors - actions - set(CODES) == set()
    exported = {obj for name in dir(sqlite3) if isinstance(obj := getattr(sqlite3, name), type)
                and issubclass(obj, Exception)}
    assert exported - {driver for driver, _ in CLASSES} == set()
    assert all(issubclass(kind, MendflowError) for kind in CODES.values())


def test_a_locked_database_is_destination_unavailable(tmp_path: Path) -> None:
    """Another connection holding the write lock past the busy timeout: retryable."""
    db = tmp_path / "d.sqlite"
    sink = SQLiteSink(db, table="t", busy_timeout_s=0.05)
    sink.write(_load("b1", [{"id": 1}]))
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(DestinationUnavailable, match="database is locked") as raised:
            sink.write(_load("b2", [{"id": 2}]))
        assert raised.value.retryable
        assert raised.value.dependency == f"sqlite:{db}"
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert sink.write(_load("b2", [{"id": 2}]))
    sink.close()


def test_a_full_database_is_resource_exhausted(tmp_path: Path) -> None:
    """SQLITE_FULL (here max_page_count reached) asks for room, retryable."""
    con = sqlite3.connect(tmp_path / "full.sqlite")
    con.execute("CREATE TABLE x (v BLOB)")
    con.execute("PRAGMA max_page_count = 3")
    with pytest.raises(sqlite3.Error) as raised:
        con.execute("INSERT INTO x VALUES (zeroblob(100000))")
    con.close()
    assert kind_of(raised.value) is ResourceExhausted
    assert "free disk space" in str(translate(raised.value, "loading"))


def test_a_constraint_of_the_table_is_bad_data_and_a_missing_folder_a_destination_error(
    tmp_path: Path,
) -> None:
    """A CHECK of a table made outside mendflow refuses a row: the batch is bad data (nothing
    committed); a file in a folder that does not exist cannot be opened: permanent."""
    db = tmp_path / "d.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (id INTEGER CHECK (id > 0))")
    con.close()
    sink = SQLiteSink(db, table="t")
    with pytest.raises(BadData, match="CHECK constraint failed"):
        sink.write(_load("b1", [{"id": 1}, {"id": -1}]))
    assert sink.position("p") == {}
    sink.close()
    with pytest.raises(DestinationError, match="unable to open"):
        SQLiteSink(tmp_path / "no" / "such.sqlite", table="t").position("p")


# -- crash ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def drops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The crash tests' three files (``tests/_chains.py``)."""
    return write_drops(tmp_path_factory.mktemp("crash") / "drops")


def _pipeline(folder: Path, drops: Path, mode: str) -> Path:
    spec: dict[str, Any] = {
        "name": f"crash_{mode}",
        "source": {"type": "files", "path": str(drops / "*.jsonl"), "batch_size": 1000},
        "destination": {"type": "sqlite", "path": str(folder / "dest.sqlite"), "table": "orders"},
        "write_mode": mode,
        "columns": {"amount": "double", "updated_at": "timestamptz"},
    }
    if mode == "merge":
        spec["primary_key"] = ["id"]
    return write_pipeline(folder / "pipeline.yaml", **spec)


def _digest(rows: list[tuple[Any, ...]]) -> tuple[int, str]:
    """(count, order-independent hash of the rows' content)."""
    hashes = sorted(hashlib.sha256(repr(row).encode()).hexdigest() for row in rows)
    return len(rows), hashlib.sha256(",".join(hashes).encode()).hexdigest()


def _outcome(folder: Path) -> tuple[tuple[int, str], tuple[int, str]]:
    db = folder / "dest.sqlite"
    dead = ("SELECT pipeline, batch_id, row_index, stage, reason, hex(record) "
            "FROM _mendflow_dead_letters")
    return _digest(_query(db, "SELECT * FROM orders")), _digest(_query(db, dead))


@pytest.mark.parametrize("mode", ["merge", "replace"])
def test_kills_at_a_dozen_points_then_a_rerun_match_a_fault_free_run(
    mode: str, drops: Path, tmp_path: Path
) -> None:
    """SIGKILLs of real processes inside the transaction (batch.staged), right after a commit,
    while reading and transforming: the final run leaves exactly the fault-free rows and dead
    letters."""
    reference = tmp_path / "reference"
    reference.mkdir()
    assert run_child(_pipeline(reference, drops, mode)) == 0
    expected = _outcome(reference)
    rows, dead = expected
    assert dead[0] == 9  # the malformed amounts of file a (every 301st of 3,000)
    fixed_by_c = sum(1 for i in range(100, 3001) if i % 301 == 0)  # bad in a, good in c
    assert rows[0] == (6000 - 9 + fixed_by_c if mode == "merge" else 9000 - 9)
    for number, chain in enumerate(REPLACE_CHAINS if mode == "replace" else CHAINS):
        folder = tmp_path / f"chain{number}"
        folder.mkdir()
        pipeline = _pipeline(folder, drops, mode)
        for stage, nth in chain:
            assert run_child(pipeline, stage, nth) == -signal.SIGKILL, (stage, nth)
        assert run_child(pipeline) == 0
        assert _outcome(folder) == expected, chain
