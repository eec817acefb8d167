"""The dead-letter store of a PostgreSQL destination: what a run sets aside, filters, purge,
export, replay exactly once (and its rollbacks), and the ``mendflow dlq`` commands."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from click.testing import CliRunner

from mendflow import config
from mendflow._cli_dlq import dlq
from mendflow.batch import DEAD_LETTER_SCHEMA, Committed, Load
from mendflow.deadletter import DeadLetterStore, Filter, replay, store_for
from mendflow.pipeline import Pipeline
from mendflow.sinks._pg_dlq import PostgresDeadLetters
from mendflow.sinks.postgres import PostgresSink
from tests.conftest import write_orders, write_pipeline
from tests.test_deadletter import _fix, _Refuse

SCHEMA = 'Raw "Data"'  # quoted everywhere, or nothing works


def _setup(tmp_path: Path, url: str) -> Path:
    """50 orders, every 10th with a malformed amount, into a pipeline declaring doubles."""
    drops = tmp_path / "drops"
    drops.mkdir(exist_ok=True)
    write_orders(drops / "a.jsonl", start=1, count=50, seed=1, bad_every=10)
    return write_pipeline(
        tmp_path / "pipeline.yaml", name="orders",
        source={"type": "files", "path": str(drops / "*.jsonl")},
        destination={"type": "postgres", "url": url, "table": "orders", "schema": SCHEMA},
        columns={"amount": "double"})


def _pipeline(path: Path, **change: Any) -> Pipeline:
    return dataclasses.replace(config.load(path).pipeline, **change)


def _run(path: Path) -> None:
    pipeline = _pipeline(path)
    pipeline.run()
    pipeline.destination.close()


def _replay(path: Path, **kw: Any) -> Any:
    pipeline = _pipeline(path, **{k: kw.pop(k) for k in ("checks", "max_replays") if k in kw})
    try:
        return replay(pipeline, **kw)
    finally:
        pipeline.destination.close()


def _query(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as con:
        con.execute(psycopg.sql.SQL("SET search_path = {}").format(psycopg.sql.Identifier(SCHEMA)))
        return [tuple(r) for r in con.execute(query).fetchall()]


def _store(url: str) -> list[tuple[Any, ...]]:
    """Every dead letter's id, attempts, first and last seen (epoch), stage, reason, record."""
    return _query(url, "SELECT id, attempts, extract(epoch FROM first_seen), extract(epoch FROM "
                  "last_seen), stage, reason, record FROM _mendflow_dead_letters ORDER BY id")


def _ids(url: str) -> list[int]:
    return [r[0] for r in _query(url, "SELECT id FROM orders ORDER BY id")]


def _stored_ids(url: str) -> list[int]:
    return sorted(json.loads(bytes(r[6]))["id"] for r in _store(url))


def _put(url: str, records: list[bytes], checks: list[str | None] | None = None) -> None:
    """Write dead letters directly, as a load with no rows would."""
    n = len(records)
    dead = pa.table(
        [pa.array(range(n), pa.int64()), pa.array(["validate"] * n), pa.array(["bad"] * n),
         pa.array(checks or [None] * n, pa.string()), pa.array(records, pa.binary()),
         pa.array(["json"] * n)], schema=DEAD_LETTER_SCHEMA)
    sink = PostgresSink(url, table="orders", schema=SCHEMA)
    sink.write(Load(pipeline="orders", run_id="r", batch_id=f"put-{time.monotonic_ns()}",
                    data=pa.table({}), position=None, dead_letters=dead))
    sink.close()


def _open(url: str) -> DeadLetterStore:
    """The destination's store, typed as the protocol (so mypy checks that it is one)."""
    return PostgresSink(url, table="orders", schema=SCHEMA).dead_letters()


def test_a_run_dead_letters_each_bad_record_with_its_bytes_reason_and_attempt(
    tmp_path: Path, pg_url: str
) -> None:
    """Each malformed amount becomes one dead letter, found through the pipeline's destination."""
    path = _setup(tmp_path, pg_url)
    _run(path)
    pipeline = _pipeline(path)
    store = store_for(pipeline.destination)
    assert isinstance(store, PostgresDeadLetters)
    letters = store.list()
    pipeline.destination.close()
    assert [json.loads(x.record)["id"] for x in letters] == [10, 20, 30, 40, 50]
    assert {(x.pipeline, x.stage, x.format, x.attempts) for x in letters} == {
        ("orders", "coerce", "json", 1)}
    assert all("amount" in x.reason and json.loads(x.record)["amount"] == "n/a" for x in letters)
    assert all(x.first_seen == x.last_seen > 1e9 for x in letters)


def test_filters_select_by_pipeline_stage_check_time_ids_and_limit(
    tmp_path: Path, pg_url: str
) -> None:
    """Each filter narrows the list; the check filter matches any failed check by name."""
    both = json.dumps([{"check": "range", "column": "a", "message": "m"},
                       {"check": "regex", "column": "b", "message": "m"}])
    one = json.dumps([{"check": "regex", "column": "b", "message": "m"}])
    _put(pg_url, [b'{"a": 1}', b'{"a": 2}', b'{"a": 3}', b"{}"], [both, one, "[]", None])
    store, now = _open(pg_url), time.time()
    everything = store.list()
    assert len(everything) == 4
    assert store.list(Filter(pipeline="orders", stage="validate")) == everything
    assert store.list(Filter(pipeline="other")) == store.list(Filter(stage="parse")) == []
    assert [x.record for x in store.list(Filter(check="regex"))] == [b'{"a": 1}', b'{"a": 2}']
    assert store.list(Filter(check="range"))[0].checks[1]["check"] == "regex"
    assert store.list(Filter(check="unique")) == []
    assert store.list(Filter(since=now - 600, until=now + 600)) == everything
    assert store.list(Filter(since=now + 600)) == store.list(Filter(until=now - 600)) == []
    assert store.list(Filter(limit=2)) == everything[:2]
    assert store.list(Filter(ids=(everything[3].id,))) == [everything[3]]
    assert store.get(everything[1].id) == everything[1]
    assert store.get(10_000) is None
    assert store.count(Filter(check="regex"), min_attempts=1) == 2


def test_purge_deletes_what_is_selected_and_export_writes_text_or_base64(pg_url: str) -> None:
    """Purge returns the count deleted; export writes one JSON line per letter, a record that is
    not UTF-8 as base64."""
    _put(pg_url, [b'{"a": "\xc3\xa9"}', b"\xff\x00\xfe", b"{}"])
    store = _open(pg_url)
    _, *rest = store.list()
    assert store.purge(Filter(ids=(rest[1].id,))) == 1
    assert store.purge(Filter(pipeline="other")) == 0
    out = io.StringIO()
    assert store.export(Filter(), out) == 2
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (lines[0]["record"], lines[0]["encoding"]) == ('{"a": "é"}', "utf-8")
    assert (base64.b64decode(lines[1]["record"]), lines[1]["encoding"]) == (
        b"\xff\x00\xfe", "base64")
    assert lines[0]["first_seen"].endswith("+00:00")
    assert store.purge(Filter(pipeline="orders")) == 2
    assert store.list() == []


def test_replay_before_the_fix_raises_attempts_and_after_it_loads_each_record_once(
    tmp_path: Path, pg_url: str
) -> None:
    """Failing again: attempts + 1, last seen moved, record unchanged, table untouched. After the
    fix every record is in the table once and gone from the store; the checkpoint is kept."""
    path = _setup(tmp_path, pg_url)
    _run(path)
    before, table = _store(pg_url), _query(pg_url, "SELECT * FROM orders ORDER BY id")
    sink = PostgresSink(pg_url, table="orders", schema=SCHEMA)
    position = sink.position("orders")
    result = _replay(path)
    assert (result.loaded, result.failed, result.skipped, result.poison) == (0, 5, 0, 0)
    after = _store(pg_url)
    assert [(r[0], r[1], r[2], r[6]) for r in after] == [
        (r[0], r[1] + 1, r[2], r[6]) for r in before]
    assert all(new[3] > old[3] for new, old in zip(after, before, strict=True))
    assert _query(pg_url, "SELECT * FROM orders ORDER BY id") == table
    _fix(path)
    assert (_replay(path).loaded, _replay(path).loaded) == (5, 0)
    assert _ids(pg_url) == list(range(1, 51))
    assert _store(pg_url) == []
    assert sink.position("orders") == position
    sink.close()
    assert _query(pg_url, "SELECT DISTINCT amount FROM orders WHERE id % 10 = 0") == [(-1.0,)]


def test_replay_in_chunks_loads_part_and_keeps_the_rest_in_their_places(
    tmp_path: Path, pg_url: str
) -> None:
    """With chunks of two, a mix of passing and failing records settles each one correctly."""
    path = _setup(tmp_path, pg_url)
    _run(path)
    _open(pg_url).purge(Filter(pipeline="orders"))
    good = [{"id": 900 + i, "amount": "1.5"} for i in range(3)]
    bad = [{"id": 950 + i, "amount": "x"} for i in range(3)]
    _put(pg_url, [json.dumps(r).encode() for pair in zip(good, bad, strict=True) for r in pair])
    result = _replay(path, chunk=2)
    assert (result.loaded, result.failed) == (3, 3)
    assert [i for i in _ids(pg_url) if i >= 900] == [900, 901, 902]
    assert _stored_ids(pg_url) == [950, 951, 952]
    assert {r[1] for r in _store(pg_url)} == {2}


class _FailBeforeCommit:
    """A sink whose transaction fails just before COMMIT."""

    def __init__(self, inner: PostgresSink) -> None:
        self.inner = inner
        self.name = inner.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def write(self, load: Load, *, on_staged: Callable[[], None] = lambda: None
              ) -> Committed | None:
        def fail() -> None:
            raise RuntimeError("power cut")

        return self.inner.write(load, on_staged=fail)


def test_a_replay_rolled_back_leaves_table_and_store_as_they_were(
    tmp_path: Path, pg_url: str
) -> None:
    """A failure before COMMIT undoes rows, deletes and attempts; a blocking check that fails
    does too, but for one more attempt per record, and the result names the check."""
    path = _setup(tmp_path, pg_url)
    _run(path)
    _fix(path)
    table, store = _ids(pg_url), _store(pg_url)
    pipeline = _pipeline(path)
    assert isinstance(pipeline.destination, PostgresSink)
    broken = dataclasses.replace(pipeline, destination=_FailBeforeCommit(pipeline.destination))
    with pytest.raises(RuntimeError, match="power cut"):
        replay(broken)
    pipeline.destination.close()
    assert (_ids(pg_url), _store(pg_url)) == (table, store)
    result = _replay(path, checks=(_Refuse(),))
    assert (result.loaded, result.failed) == (0, 5)
    assert "refuse" in result.blocked[0]
    assert _ids(pg_url) == table
    assert [(r[0], r[1], r[6]) for r in _store(pg_url)] == [(r[0], r[1] + 1, r[6]) for r in store]
    assert _replay(path).loaded == 5


def _cli(*args: str) -> Any:
    return CliRunner().invoke(dlq, list(args), catch_exceptions=False)


def test_the_dlq_commands_work_on_a_postgres_destination(tmp_path: Path, pg_url: str) -> None:
    """list, show, replay, export and purge through the pipeline file."""
    path = _setup(tmp_path, pg_url)
    _run(path)
    lines = _cli("list", str(path)).output.splitlines()
    assert len(lines) == 6
    assert lines[1].split()[1] == "coerce"
    listed = json.loads(_cli("list", str(path), "--json", "--limit", "2").output)
    assert [json.loads(x["record"])["id"] for x in listed] == [10, 20]
    shown = _cli("show", str(path), str(listed[0]["id"]))
    assert f"batch_id:   {listed[0]['batch_id']}" in shown.output
    assert _cli("show", str(path), "999999").exit_code == 2
    assert "failed again 5" in _cli("replay", str(path)).output
    _fix(path)
    assert json.loads(_cli("replay", str(path), "--json", "--limit", "2").output)["loaded"] == 2
    out = tmp_path / "dead.jsonl"
    assert _cli("export", str(path), "--output", str(out)).exit_code == 0
    exported = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [json.loads(x["record"])["id"] for x in exported] == [30, 40, 50]
    assert [x["attempts"] for x in exported] == [2, 2, 2]
    assert "purged 1 dead letters of orders" in _cli(
        "purge", str(path), "--limit", "1", "--yes").output
    assert "purged 2" in _cli("purge", str(path), "--all", "--yes").output
    assert _store(pg_url) == []
    assert _ids(pg_url) == [i for i in range(1, 51) if i not in (30, 40, 50)]
