"""The dead-letter store: listing, filters, replay exactly once, the poison guard, purge, export,
the ``mendflow dlq`` commands, and a replay killed at random moments."""

from __future__ import annotations

import base64
import dataclasses
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import yaml
from click.testing import CliRunner

from mendflow import config
from mendflow._cli_dlq import dlq
from mendflow.batch import DEAD_LETTER_SCHEMA, Audit, Committed, Finding, Load
from mendflow.deadletter import DeadLetterStore, Filter, replay, store_for
from mendflow.exceptions import ConfigError, SchemaMismatch
from mendflow.pipeline import Pipeline
from mendflow.sinks.duckdb import DuckDBSink
from mendflow.testing import EventLog, FakeClock
from tests.conftest import table_hash, write_orders, write_pipeline

FIX = "SELECT * REPLACE (coalesce(TRY_CAST(amount AS DOUBLE), -1.0) AS amount) FROM batch"


def _setup(tmp_path: Path, *, count: int = 50, bad_every: int = 10, **extra: Any) -> Path:
    """Orders with ``count // bad_every`` malformed amounts, and a pipeline declaring doubles."""
    drops = tmp_path / "drops"
    drops.mkdir(exist_ok=True)
    write_orders(drops / "a.jsonl", start=1, count=count, seed=1, bad_every=bad_every)
    spec: dict[str, Any] = {
        "name": "orders",
        "source": {"type": "files", "path": str(drops / "*.jsonl")},
        "destination": {"type": "duckdb", "path": str(tmp_path / "w.duckdb"), "table": "orders"},
        "columns": {"amount": "double"},
        **extra,
    }
    return write_pipeline(tmp_path / "pipeline.yaml", **spec)


def _fix(path: Path) -> None:
    """The contract fix: read amount as text and map what does not cast to -1."""
    spec = yaml.safe_load(path.read_text())
    spec["columns"] = {"amount": "varchar"}
    spec["transforms"] = [{"sql": FIX}]
    write_pipeline(path, **spec)


def _pipeline(path: Path, **change: Any) -> Pipeline:
    return dataclasses.replace(config.load(path).pipeline, **change)


@contextmanager
def _opened(path: Path) -> Iterator[DeadLetterStore]:
    """The pipeline's dead-letter store, its connection closed after."""
    pipeline = _pipeline(path)
    try:
        yield store_for(pipeline.destination)
    finally:
        pipeline.destination.close()


def _run(path: Path) -> None:
    _pipeline(path).run()


def _store(db: Path) -> list[tuple[Any, ...]]:
    """Every dead letter's id, attempts, first and last seen (epoch), stage and record bytes."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(
            "SELECT id, attempts, epoch(first_seen), epoch(last_seen), stage, reason, record "
            "FROM _mendflow_dead_letters ORDER BY id"
        ).fetchall()
    finally:
        con.close()


def _table_ids(db: Path) -> list[int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT id FROM orders ORDER BY id").fetchall()]
    finally:
        con.close()


def _stored_order_ids(db: Path) -> list[int]:
    return sorted(json.loads(row[6])["id"] for row in _store(db))


def _put(db: Path, records: list[tuple[bytes, str]], *, checks: list[str | None] | None = None,
         stage: str = "validate", pipeline: str = "orders") -> None:
    """Write dead letters directly, as a load with no rows would."""
    n = len(records)
    dead = pa.table(
        [pa.array(range(n), pa.int64()), pa.array([stage] * n), pa.array(["bad"] * n),
         pa.array(checks if checks is not None else [None] * n, pa.string()),
         pa.array([r for r, _ in records], pa.binary()), pa.array([f for _, f in records])],
        schema=DEAD_LETTER_SCHEMA,
    )
    sink = DuckDBSink(db, table="orders")
    sink.write(Load(pipeline=pipeline, run_id="r", batch_id=f"put-{time.monotonic_ns()}",
                    data=pa.table({}), position=None, dead_letters=dead))
    sink.close()


# -- the store ------------------------------------------------------------------------------


def test_a_run_dead_letters_each_bad_record_with_its_bytes_reason_and_attempt(
    tmp_path: Path,
) -> None:
    """Each malformed amount becomes one dead letter: original record, stage, reason, attempt 1."""
    path = _setup(tmp_path)
    _run(path)
    with _opened(path) as store:
        letters = store.list()
    assert [json.loads(x.record)["id"] for x in letters] == [10, 20, 30, 40, 50]
    assert {(x.pipeline, x.stage, x.format, x.attempts) for x in letters} == {
        ("orders", "coerce", "json", 1)}
    assert all("amount" in x.reason and json.loads(x.record)["amount"] == "n/a" for x in letters)
    assert all(x.first_seen == x.last_seen > 1e9 for x in letters)


def test_list_filters_by_pipeline_stage_time_ids_and_limit(tmp_path: Path) -> None:
    """Each filter narrows the list; get returns one letter or None."""
    path = _setup(tmp_path)
    _run(path)
    store = store_for(_pipeline(path).destination)
    everything = store.list()
    now = time.time()
    assert store.list(Filter(pipeline="orders", stage="coerce")) == everything
    assert store.list(Filter(pipeline="other")) == []
    assert store.list(Filter(stage="parse")) == []
    assert store.list(Filter(since=now - 600, until=now + 600)) == everything
    assert store.list(Filter(since=now + 600)) == []
    assert store.list(Filter(until=now - 600)) == []
    assert store.list(Filter(limit=2)) == everything[:2]
    assert store.list(Filter(ids=(everything[3].id,))) == [everything[3]]
    assert store.get(everything[1].id) == everything[1]
    assert store.get(10_000) is None


def test_list_filters_by_the_name_of_a_failed_check(tmp_path: Path) -> None:
    """The check filter matches any of a record's failed checks by name."""
    db = tmp_path / "w.duckdb"
    both = json.dumps([{"check": "range", "column": "a", "message": "m"},
                       {"check": "regex", "column": "b", "message": "m"}])
    one = json.dumps([{"check": "regex", "column": "b", "message": "m"}])
    _put(db, [(b'{"a": 1}', "json"), (b'{"a": 2}', "json"), (b'{"a": 3}', "json")],
         checks=[both, one, "[]"])
    store = DuckDBSink(db, table="orders").dead_letters()
    assert [x.record for x in store.list(Filter(check="range"))] == [b'{"a": 1}']
    assert [x.record for x in store.list(Filter(check="regex"))] == [b'{"a": 1}', b'{"a": 2}']
    assert store.list(Filter(check="unique")) == []
    assert store.list(Filter(check="range"))[0].checks[1] == {
        "check": "regex", "column": "b", "message": "m"}


def test_a_filter_with_since_after_until_or_a_zero_limit_is_refused() -> None:
    """Filters that can select nothing by construction are configuration errors."""
    with pytest.raises(ConfigError, match="since"):
        Filter(since=10.0, until=5.0)
    with pytest.raises(ConfigError, match="limit"):
        Filter(limit=0)


def test_purge_deletes_only_what_the_filter_selects(tmp_path: Path) -> None:
    """Purge returns the count deleted; the rest stays."""
    path = _setup(tmp_path)
    _run(path)
    store = store_for(_pipeline(path).destination)
    first, *rest = store.list()
    assert store.purge(Filter(ids=(first.id,))) == 1
    assert store.list() == rest
    assert store.purge(Filter(pipeline="other")) == 0
    assert store.purge(Filter(pipeline="orders")) == 4
    assert store.list() == []


def test_export_writes_json_lines_with_text_or_base64_records(tmp_path: Path) -> None:
    """Export writes one JSON object per letter; a record that is not UTF-8 comes as base64."""
    db = tmp_path / "w.duckdb"
    _put(db, [(b'{"a": "\xc3\xa9"}', "json"), (b"\xff\x00\xfe", "bytes")])
    out = tmp_path / "out.jsonl"
    with out.open("w", encoding="utf-8") as handle:
        assert DuckDBSink(db, table="orders").dead_letters().export(Filter(), handle) == 2
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert (lines[0]["record"], lines[0]["encoding"]) == ('{"a": "é"}', "utf-8")
    assert base64.b64decode(lines[1]["record"]) == b"\xff\x00\xfe"
    assert lines[1]["encoding"] == "base64"
    assert lines[0]["first_seen"].endswith("+00:00")
    assert lines[0]["attempts"] == 1


def test_a_dead_letter_table_of_the_previous_version_is_migrated_on_connect(
    tmp_path: Path,
) -> None:
    """Old rows get ids, their text record as bytes, format json and attempt 1."""
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE _mendflow_dead_letters (pipeline VARCHAR, batch_id VARCHAR, row_index "
        "BIGINT, run_id VARCHAR, stage VARCHAR, reason VARCHAR, record VARCHAR, created_at "
        "TIMESTAMPTZ)"
    )
    con.execute(
        "INSERT INTO _mendflow_dead_letters VALUES ('orders', 'b1', 3, 'r1', 'coerce', "
        "'amount: x', '{\"amount\": \"x\"}', TIMESTAMPTZ '2026-01-02 03:04:05+00'), "
        "('orders', 'b1', 7, 'r1', 'coerce', 'amount: y', '{\"amount\": \"y\"}', "
        "TIMESTAMPTZ '2026-01-02 03:04:06+00')"
    )
    con.close()
    letters = DuckDBSink(db, table="orders").dead_letters().list()
    assert [(x.id, x.row_index, x.record, x.format, x.attempts) for x in letters] == [
        (1, 3, b'{"amount": "x"}', "json", 1), (2, 7, b'{"amount": "y"}', "json", 1)]
    assert letters[0].first_seen == letters[0].last_seen == 1767323045.0


def test_a_dead_letter_table_of_unknown_shape_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """A table mendflow did not make is not touched; the error says how to move it aside."""
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE _mendflow_dead_letters (whatever VARCHAR)")
    con.close()
    with pytest.raises(SchemaMismatch, match="RENAME"):
        DuckDBSink(db, table="orders").dead_letters().list()


# -- replay ---------------------------------------------------------------------------------


def test_replay_before_the_fix_loads_nothing_and_raises_attempts(tmp_path: Path) -> None:
    """Records that fail again stay: attempts + 1, last seen moved, record bytes unchanged."""
    path = _setup(tmp_path)
    _run(path)
    db = tmp_path / "w.duckdb"
    before, table = _store(db), table_hash(db, "orders")
    events = EventLog()
    result = replay(_pipeline(path), hooks=[events], clock=FakeClock())
    assert (result.loaded, result.failed, result.skipped, result.poison) == (0, 5, 0, 0)
    after = _store(db)
    assert [(r[0], r[1], r[2], r[6]) for r in after] == [
        (r[0], r[1] + 1, r[2], r[6]) for r in before]
    assert all(new[3] > old[3] for new, old in zip(after, before, strict=True))
    assert all(r[4] == "coerce" and "amount" in r[5] for r in after)
    assert table_hash(db, "orders") == table
    replayed = [e for e in events if e.kind == "dlq.replayed"]
    assert len(replayed) == 1
    assert replayed[0].payload() == {"loaded": 0, "failed": 5,
                                                            "skipped": 0}
    assert replayed[0].at == FakeClock().now()
    assert replayed[0].run_id


def test_replay_after_the_fix_loads_each_record_exactly_once(tmp_path: Path) -> None:
    """After the fix every record is in the table once and gone from the store; checkpoint kept."""
    path = _setup(tmp_path)
    _run(path)
    db = tmp_path / "w.duckdb"
    sink = DuckDBSink(db, table="orders")
    position = sink.position("orders")
    sink.close()
    replay(_pipeline(path))
    _fix(path)
    result = replay(_pipeline(path))
    assert (result.loaded, result.failed) == (5, 0)
    assert _table_ids(db) == list(range(1, 51))
    assert _store(db) == []
    assert replay(_pipeline(path)).loaded == 0
    assert _table_ids(db) == list(range(1, 51))
    assert sink.position("orders") == position
    sink.close()
    con = duckdb.connect(str(db), read_only=True)
    amounts = con.execute("SELECT DISTINCT amount FROM orders WHERE id % 10 = 0").fetchall()
    con.close()
    assert amounts == [(-1.0,)]


def test_replay_in_chunks_loads_part_and_keeps_the_rest_in_their_places(tmp_path: Path) -> None:
    """With chunks of two, a mix of passing and failing records settles each one correctly."""
    path = _setup(tmp_path)
    db = tmp_path / "w.duckdb"
    good = [json.dumps({"id": 900 + i, "updated_at": "2026-01-01T00:00:00Z", "amount": "1.5",
                        "qty": 1, "note": None}).encode() for i in range(3)]
    bad = [json.dumps({"id": 950 + i, "updated_at": "2026-01-01T00:00:00Z", "amount": "x",
                       "qty": 1, "note": None}).encode() for i in range(3)]
    _run(path)
    with _opened(path) as store:
        store.purge(Filter(pipeline="orders"))
    _put(db, [(r, "json") for pair in zip(good, bad, strict=True) for r in pair])
    result = replay(_pipeline(path), chunk=2)
    assert (result.loaded, result.failed) == (3, 3)
    assert [i for i in _table_ids(db) if i >= 900] == [900, 901, 902]
    assert _stored_order_ids(db) == [950, 951, 952]
    assert {r[1] for r in _store(db)} == {2}


def test_records_of_mixed_types_replay_without_crashing(tmp_path: Path) -> None:
    """Numbers, numeric strings and words in one column are read as text and judged per row."""
    path = _setup(tmp_path)
    db = tmp_path / "w.duckdb"
    _run(path)
    with _opened(path) as store:
        store.purge(Filter(pipeline="orders"))
    rows = [{"id": 101, "amount": 7}, {"id": 102, "amount": "12.5"}, {"id": 103, "amount": "x"},
            {"id": 104, "amount": 3.25, "qty": 2}]
    _put(db, [(json.dumps(r).encode(), "json") for r in rows])
    result = replay(_pipeline(path))
    assert (result.loaded, result.failed) == (3, 1)
    assert [i for i in _table_ids(db) if i > 100] == [101, 102, 104]
    assert _stored_order_ids(db) == [103]


def test_rows_the_destination_sets_aside_stay_in_the_store_as_failed(tmp_path: Path) -> None:
    """A replayed value that does not fit the table's column fails at stage load, in place."""
    path = _setup(tmp_path)
    db = tmp_path / "w.duckdb"
    _run(path)
    with _opened(path) as store:
        store.purge(Filter(pipeline="orders"))
    _put(db, [(b'{"id": 901, "amount": "12.5"}', "json"), (b'{"id": 902, "amount": "abc"}',
                                                          "json")])
    spec = yaml.safe_load(path.read_text())
    del spec["columns"]
    write_pipeline(path, **spec)
    result = replay(_pipeline(path))
    assert (result.loaded, result.failed) == (1, 1)
    assert [i for i in _table_ids(db) if i > 900] == [901]
    rows = _store(db)
    assert [(r[1], r[4], bytes(r[6])) for r in rows] == [
        (2, "load", b'{"id": 902, "amount": "abc"}')]


def test_csv_and_byte_records_are_skipped_and_broken_json_fails_at_parse(tmp_path: Path) -> None:
    """Records that cannot be parsed alone are left as they are; broken JSON fails again."""
    path = _setup(tmp_path)
    db = tmp_path / "w.duckdb"
    _run(path)
    with _opened(path) as store:
        store.purge(Filter(pipeline="orders"))
    _put(db, [(b"1,2,3", "csv"), (b"\xff\xfe", "bytes"), (b'{"id": 5, "amount', "json"),
              (b"[1, 2]", "json"), (b"\xff{}", "json")], stage="parse")
    _fix(path)  # a transform that would fail on a batch without columns
    result = replay(_pipeline(path))
    assert (result.loaded, result.failed, result.skipped) == (0, 3, 2)
    rows = _store(db)
    assert [(r[1], r[4], r[5], bytes(r[6])) for r in rows] == [
        (1, "parse", "bad", b"1,2,3"), (1, "parse", "bad", b"\xff\xfe"),
        (2, "parse", "not valid JSON", b'{"id": 5, "amount'),
        (2, "parse", "not a JSON object", b"[1, 2]"), (2, "parse", "not UTF-8 text", b"\xff{}")]


def test_poison_records_are_left_alone_unless_forced(tmp_path: Path) -> None:
    """After max_replays attempts a record is poison: reported, not replayed, until --force."""
    path = _setup(tmp_path)
    _run(path)
    db = tmp_path / "w.duckdb"
    assert replay(_pipeline(path, max_replays=2)).failed == 5
    assert {r[1] for r in _store(db)} == {2}
    again = replay(_pipeline(path, max_replays=2))
    assert (again.loaded, again.failed, again.poison) == (0, 0, 5)
    assert {r[1] for r in _store(db)} == {2}
    _fix(path)
    assert replay(_pipeline(path, max_replays=2)).poison == 5
    forced = replay(_pipeline(path, max_replays=2), force=True)
    assert (forced.loaded, forced.poison) == (5, 0)
    assert _store(db) == []
    assert len(_table_ids(db)) == 50


class _FailBeforeCommit:
    """A DuckDB sink whose transaction fails just before COMMIT."""

    def __init__(self, inner: DuckDBSink) -> None:
        self.inner = inner
        self.name = inner.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def write(
        self, load: Load, *, on_staged: Callable[[], None] = lambda: None
    ) -> Committed | None:
        def fail() -> None:
            raise RuntimeError("power cut")

        return self.inner.write(load, on_staged=fail)


def test_a_replay_whose_transaction_fails_leaves_table_and_store_as_they_were(
    tmp_path: Path,
) -> None:
    """Rows, deletes and attempt updates roll back together."""
    path = _setup(tmp_path)
    _run(path)
    db = tmp_path / "w.duckdb"
    _fix(path)
    before = (table_hash(db, "orders"), _store(db))
    pipeline = _pipeline(path)
    assert isinstance(pipeline.destination, DuckDBSink)
    broken = dataclasses.replace(pipeline, destination=_FailBeforeCommit(pipeline.destination))
    with pytest.raises(RuntimeError, match="power cut"):
        replay(broken)
    assert (table_hash(db, "orders"), _store(db)) == before
    assert replay(pipeline).loaded == 5


@dataclasses.dataclass(frozen=True)
class _Refuse:
    """A blocking check that fails every batch."""

    name: str = "refuse"
    blocking: bool = True

    def check(self, audit: Audit) -> Finding:
        return Finding(check=self.name, blocking=True, passed=False, message="no")


def test_a_replay_failing_a_blocking_check_leaves_table_and_store_as_they_were(
    tmp_path: Path,
) -> None:
    """A blocking check that fails rolls the replay back: nothing loaded, nothing settled; each
    record stays as it was but for one more attempt, and the result says which check refused."""
    path = _setup(tmp_path)
    _run(path)
    db = tmp_path / "w.duckdb"
    _fix(path)
    table, store = table_hash(db, "orders"), _store(db)
    result = replay(_pipeline(path, checks=(_Refuse(),)))
    assert (result.loaded, result.failed) == (0, len(store))
    [blocked] = result.blocked
    assert "refuse" in blocked
    assert table_hash(db, "orders") == table
    after = _store(db)
    assert [(r[0], r[4], r[5], r[6]) for r in after] == [(r[0], r[4], r[5], r[6]) for r in store]
    assert [r[1] for r in after] == [r[1] + 1 for r in store]


def test_a_replace_pipeline_cannot_replay(tmp_path: Path) -> None:
    """Replace rebuilds its table each run: replay says to fix the source instead."""
    path = _setup(tmp_path, write_mode="replace")
    _run(path)
    with pytest.raises(ConfigError, match="replaces its table"):
        replay(_pipeline(path))


# -- a replay killed at random moments --------------------------------------------------------

CHILD = """
import sys
from mendflow import config
from mendflow.deadletter import replay
pipeline = config.load(sys.argv[1]).pipeline
print("ready", flush=True)
replay(pipeline, chunk=int(sys.argv[2]))
"""


def _start_replay(path: Path) -> subprocess.Popen[str]:
    """A replay in a child process, returned once it is about to start (imports done)."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), "500"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    return proc


@pytest.mark.slow
def test_a_replay_killed_at_random_moments_then_rerun_moves_each_record_once(
    tmp_path: Path,
) -> None:
    """SIGKILLs mid-replay, then a full replay: every order in the table xor the store, once."""
    count = 40_000
    path = _setup(tmp_path, count=count, bad_every=2)
    _run(path)
    _fix(path)
    db, before = tmp_path / "w.duckdb", tmp_path / "before.duckdb"
    shutil.copy(db, before)
    rng, window = random.Random(4), 1.0
    kills = partial = 0
    for _ in range(16):
        if kills >= 3 and partial:
            break
        proc = _start_replay(path)
        time.sleep(rng.uniform(0.05, 1.0) * window)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        assert proc.wait(timeout=60) == (-signal.SIGKILL if killed else 0)
        table, stored = _table_ids(db), _stored_order_ids(db)
        assert len(table) == len(set(table))
        assert not set(table) & set(stored)
        assert sorted(table + stored) == list(range(1, count + 1))
        partial += killed and 0 < len(stored) < count // 2
        if killed and len(stored) == count // 2:
            window *= 1.5  # killed before the first commit: aim later
        if not stored:  # it finished first: start over from the dead letters, aim sooner
            shutil.copy(before, db)
            window *= 0.6
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), "500"], check=False,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _table_ids(db) == list(range(1, count + 1))
    assert _store(db) == []
    assert kills >= 2
    assert partial


# -- the commands -----------------------------------------------------------------------------


def _cli(*args: str) -> Any:
    return CliRunner().invoke(dlq, list(args), catch_exceptions=False)


def test_cli_list_prints_a_table_or_full_json(tmp_path: Path) -> None:
    """list shows id, stage, batch, attempts, last seen and reason; --json every field."""
    path = _setup(tmp_path)
    _run(path)
    human = _cli("list", str(path))
    assert human.exit_code == 0
    lines = human.output.splitlines()
    assert lines[0].split() == ["id", "stage", "batch", "attempts", "last", "seen", "reason"]
    assert len(lines) == 6
    assert "amount" in lines[1]
    assert lines[1].split()[1] == "coerce"
    data = json.loads(_cli("list", str(path), "--json", "--limit", "2").output)
    assert [json.loads(x["record"])["id"] for x in data] == [10, 20]
    assert data[0]["encoding"] == "utf-8"
    assert data[0]["attempts"] == 1
    assert json.loads(_cli("list", str(path), "--json", "--stage", "parse").output) == []
    assert json.loads(_cli("list", str(path), "--json", "--since", "1h").output) == json.loads(
        _cli("list", str(path), "--json").output)
    assert json.loads(_cli("list", str(path), "--json", "--until",
                           "2020-01-01T00:00:00Z").output) == []
    assert _cli("list", str(path), "--pipeline", "other").output == "no dead letters match.\n"


def test_cli_show_prints_the_record_and_checks(tmp_path: Path) -> None:
    """show prints every field and the record; an unknown id exits 2 saying how to list."""
    path = _setup(tmp_path)
    _run(path)
    with _opened(path) as store:
        first = store.list()[0]
    shown = _cli("show", str(path), str(first.id))
    assert shown.exit_code == 0
    assert first.record.decode() in shown.output
    assert f"batch_id:   {first.batch_id}" in shown.output
    assert json.loads(_cli("show", str(path), str(first.id), "--json").output)["id"] == first.id
    missing = _cli("show", str(path), "999")
    assert missing.exit_code == 2
    assert "mendflow dlq list" in missing.output


def test_cli_replay_prints_counts_and_json(tmp_path: Path) -> None:
    """replay prints loaded/failed/skipped/poison, as text or JSON."""
    path = _setup(tmp_path)
    _run(path)
    text = _cli("replay", str(path))
    assert text.exit_code == 0
    assert "loaded 0, failed again 5, skipped 0, poison 0" in text.output
    _fix(path)
    data = json.loads(_cli("replay", str(path), "--json", "--limit", "2").output)
    assert data == {"loaded": 2, "failed": 0, "skipped": 0, "poison": 0, "blocked": []}
    assert json.loads(_cli("replay", str(path), "--json", "--force").output)["loaded"] == 3


def test_cli_purge_needs_yes_and_a_filter_or_all(tmp_path: Path) -> None:
    """purge refuses without --yes, or with no filter and no --all; else prints the count."""
    path = _setup(tmp_path)
    _run(path)
    no_yes = _cli("purge", str(path), "--stage", "coerce")
    assert no_yes.exit_code == 2
    assert "--yes" in no_yes.output
    no_filter = _cli("purge", str(path), "--yes")
    assert no_filter.exit_code == 2
    assert "--all" in no_filter.output
    assert len(_store(tmp_path / "w.duckdb")) == 5
    some = _cli("purge", str(path), "--limit", "2", "--yes")
    assert some.exit_code == 0
    assert "purged 2 dead letters of orders" in some.output
    assert "purged 3" in _cli("purge", str(path), "--all", "--yes").output
    assert _store(tmp_path / "w.duckdb") == []


def test_cli_export_writes_json_lines_to_a_file_or_stdout(tmp_path: Path) -> None:
    """export writes JSON lines to --output, or to standard output."""
    path = _setup(tmp_path)
    _run(path)
    out = tmp_path / "dead.jsonl"
    done = _cli("export", str(path), "--output", str(out))
    assert done.exit_code == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(json.loads(x)["record"])["id"] for x in lines] == [10, 20, 30, 40, 50]
    stdout = CliRunner().invoke(dlq, ["export", str(path), "--limit", "1"])
    assert stdout.exit_code == 0
    assert json.loads(stdout.stdout.splitlines()[0])["id"] == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["list", "{path}", "--since", "yesterday"], "not a time"),
        (["list", "{path}", "--limit", "0"], "--limit"),
        (["list", "{missing}"], "pipeline file not found"),
        (["list", "{path}", "--since", "1h", "--until", "2h"], "since"),
        (["show", "{path}", "abc"], "ID"),
    ],
)
def test_cli_bad_options_exit_2_with_a_clear_message(
    tmp_path: Path, args: list[str], says: str
) -> None:
    """A bad time, limit, file, window or id is a user error: exit 2, no traceback."""
    path = _setup(tmp_path)
    argv = [a.format(path=path, missing=tmp_path / "nope.yaml") for a in args]
    result = CliRunner().invoke(dlq, argv)
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert "Traceback" not in result.output
