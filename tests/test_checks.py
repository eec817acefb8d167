"""Write-audit-publish: batch checks judge each load inside its transaction, before commit."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mendflow import DuckDBSink, Pipeline, StateStore
from mendflow.batch import Load
from mendflow.checks import (
    Freshness,
    NullRate,
    Reconciliation,
    UniqueKey,
    Volume,
    checks_from_spec,
    robust_z,
)
from mendflow.events import CheckRan
from mendflow.exceptions import CheckFailed, ConfigError
from mendflow.remediation import Ledger
from mendflow.remediation.supervisor import Healing, run_healing
from mendflow.testing import EventLog, FakeClock, MemorySource
from mendflow.typing import Check

NOW = 1_700_000_000.0  # FakeClock's start: 2023-11-14T22:13:20Z


def _rows(ids: Sequence[int], **extra: Any) -> list[dict[str, Any]]:
    return [{"id": i, **{k: (v(i) if callable(v) else v) for k, v in extra.items()}} for i in ids]


def _pipeline(
    db: Path, pages: Sequence[Sequence[dict[str, Any]]], checks: Sequence[Check] = (), **kw: Any
) -> Pipeline:
    return Pipeline(
        name="orders", source=MemorySource(pages), destination=DuckDBSink(db, table="orders"),
        checks=checks, **kw,
    )


def _run(pipeline: Pipeline, log: EventLog | None = None, **kw: Any) -> Any:
    return pipeline.run(hooks=[log] if log is not None else [], clock=FakeClock(), **kw)


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _failures(log: EventLog) -> list[CheckRan]:
    return [e for e in log if isinstance(e, CheckRan)]


# -- each check on real loads -----------------------------------------------------------------


def test_unique_key_passes_fresh_keys_and_refuses_a_key_already_in_the_table(
    tmp_path: Path,
) -> None:
    """Fresh keys pass; a batch re-using a key already loaded is rolled back whole."""
    db = tmp_path / "d.duckdb"
    _run(_pipeline(db, [_rows([1, 2, 3])], [UniqueKey(("id",))]))
    pipeline = _pipeline(db, [_rows([1, 2, 3]), _rows([3, 4])], [UniqueKey(("id",))])
    log = EventLog()
    with pytest.raises(CheckFailed) as caught:
        _run(pipeline, log)
    assert caught.value.check == "unique_key(id)"
    assert "1 key(s) of this batch are held by more than one row of orders" in str(caught.value)
    assert _query(db, "SELECT id FROM orders ORDER BY id") == [(1,), (2,), (3,)]
    [event] = _failures(log)
    assert (event.batch_id, event.blocking, event.passed) == ("memory#1", True, False)


def test_unique_key_counts_only_keys_of_the_batch_and_merge_keeps_keys_unique(
    tmp_path: Path,
) -> None:
    """Duplicates already in the table outside the batch's keys do not fail it; merge passes."""
    db = tmp_path / "d.duckdb"
    _run(_pipeline(db, [_rows([1, 1, 2])]))  # no check: the table holds id 1 twice
    pages = [_rows([1, 1, 2]), _rows([5, 6])]
    _run(_pipeline(db, pages, [UniqueKey(("id",))]))
    assert _query(db, "SELECT count(*) FROM orders") == [(5,)]
    merged = tmp_path / "m.duckdb"
    pages = [_rows([1, 2], v=1), _rows([2, 3], v=2)]
    _run(_pipeline(merged, pages, [UniqueKey(("id",))], write_mode="merge", primary_key="id"))
    assert _query(merged, "SELECT id, v FROM orders ORDER BY id") == [(1, 1), (2, 2), (3, 2)]


def test_null_rate_passes_at_the_limit_and_fails_above_it(tmp_path: Path) -> None:
    """2 nulls in 10 rows pass a 20% limit and fail a 10% one, with the measure in the message."""
    page = _rows(range(10), email=lambda i: None if i < 2 else f"{i}@x")
    db = tmp_path / "d.duckdb"
    _run(_pipeline(db, [page], [NullRate("email", max_rate=0.2)]))
    assert _query(db, "SELECT count(*) FROM orders") == [(10,)]
    other = tmp_path / "e.duckdb"
    with pytest.raises(CheckFailed, match=r"2 of 10 rows \(20.00%\) have no email, over the "
                       r"limit of 10.00%"):
        _run(_pipeline(other, [page], [NullRate("email", max_rate=0.1)]))


def test_a_check_on_a_column_the_batch_lacks_fails_and_names_the_nearest_one(
    tmp_path: Path,
) -> None:
    """A misspelt column fails the check with a suggestion instead of passing silently."""
    page = _rows(range(3), email="a@x")
    with pytest.raises(CheckFailed, match=r"no column 'emial' \(did you mean 'email'\?\)"):
        _run(_pipeline(tmp_path / "d.duckdb", [page], [NullRate("emial", max_rate=0.5)]))


def test_freshness_measures_the_newest_timestamp_against_the_run_clock(tmp_path: Path) -> None:
    """Newest value 1 h before the fake clock: passes a 2 h limit, fails a 30 min one."""
    stamps = ["2023-11-14T20:13:20Z", "2023-11-14T21:13:20Z"]  # NOW - 2 h, NOW - 1 h
    page = [{"id": i, "updated_at": s} for i, s in enumerate(stamps)]
    db = tmp_path / "d.duckdb"
    _run(_pipeline(db, [page], [Freshness("updated_at", max_age_s=7200)]))
    with pytest.raises(CheckFailed, match="newest updated_at is 3,600s old, limit 1,800s"):
        _run(_pipeline(tmp_path / "e.duckdb", [page], [Freshness("updated_at", max_age_s=1800)]))


def test_freshness_reads_arrow_timestamps_and_refuses_a_column_that_is_not_one(
    tmp_path: Path,
) -> None:
    """Timestamp columns are judged in their unit; a number column fails with what to do."""
    check = Freshness("at", max_age_s=60)
    stamps = pa.array([int((NOW - 30) * 1000)], pa.timestamp("ms"))
    assert check.check(_audit(pa.table({"at": stamps}))).passed
    verdict = check.check(_audit(pa.table({"at": [1, 2]})))
    assert not verdict.passed
    assert "not a timestamp" in verdict.message


def test_reconciliation_refuses_a_load_that_lost_records(tmp_path: Path) -> None:
    """A load claiming 5 records read with 3 rows and 1 dead letter is rolled back."""
    sink = DuckDBSink(tmp_path / "d.duckdb", table="orders")
    data = pa.table({"id": [1, 2, 3]})
    lost = Load(pipeline="p", run_id="r", batch_id="b", data=data, position={"n": 1}, records=5)
    with pytest.raises(CheckFailed, match=r"5 records read but 3 rows loaded \+ 0 dead letters"):
        sink.write(lost)
    assert sink.position("p") == {}
    whole = Load(pipeline="p", run_id="r", batch_id="b", data=data, position={"n": 1}, records=3)
    assert sink.write(whole)
    assert sink.position("p") == {"n": 1}
    sink.close()


def test_rows_a_transform_filters_or_a_merge_supersedes_are_accounted_for(
    tmp_path: Path,
) -> None:
    """Reconciliation counts rows dropped on purpose: a filtering transform and a merge that
    keeps the last row per key (4 records read, 2 rows loaded) pass it."""
    pages = [_rows([1, 1, 2, 3], v=lambda i: i)]

    def odd_only(table: pa.Table) -> pa.Table:
        return table.filter(pc.equal(pc.bit_wise_and(table["id"], 1), 1))

    db = tmp_path / "d.duckdb"
    _run(_pipeline(db, pages, transforms=[odd_only], write_mode="merge", primary_key="id"))
    assert _query(db, "SELECT id FROM orders ORDER BY id") == [(1,), (3,)]


# -- volume ----------------------------------------------------------------------------------


def test_robust_z_matches_the_hand_computed_values() -> None:
    """Median/MAD arithmetic, the mean-deviation stand-in when MAD is 0, and a constant history."""
    history = [100, 102, 98, 101, 99]  # median 100, |dev| 0 2 2 1 1 -> MAD 1
    assert robust_z(110, history) == pytest.approx(6.745)
    assert robust_z(97, history) == pytest.approx(-2.0235)
    skewed = [100, 100, 100, 100, 120]  # MAD 0; mean |dev| = 20 / 5 = 4
    assert robust_z(110, skewed) == pytest.approx(10 / (1.253314 * 4))
    assert robust_z(7, [7, 7, 7]) == 0.0
    assert robust_z(6, [7, 7, 7]) == -math.inf


def _committed(db: Path, sizes: Sequence[int]) -> list[list[dict[str, Any]]]:
    """Pages of the given sizes with ids that never repeat."""
    pages, start = [], 0
    for size in sizes:
        pages.append(_rows(range(start, start + size)))
        start += size
    return pages


def test_volume_skips_a_short_history_then_warns_on_an_outlier_and_still_commits(
    tmp_path: Path,
) -> None:
    """Under min_history batches it passes; an outlier of z 6.745 warns and the batch commits."""
    db = tmp_path / "d.duckdb"
    pages = _committed(db, [100, 102, 98, 101, 99, 110])
    log = EventLog()
    _run(_pipeline(db, pages, [Volume(z=3.5, min_history=5)]), log)
    [event] = _failures(log)
    assert (event.batch_id, event.check, event.blocking) == ("memory#5", "volume", False)
    assert event.message.startswith("110 rows against a median of 100 over the last 5 batches: "
                                    "robust z-score +6.75, limit ±3.5. ")
    assert _query(db, "SELECT count(*) FROM orders") == [(610,)]


def test_volume_judges_the_newest_window_of_batches_so_a_new_level_is_learnt(
    tmp_path: Path,
) -> None:
    """Window 3: a drop from ~150 to ~100 warns until the window holds the new level, then a
    return to 150 warns in turn (it is judged against 100, 101, 99 only)."""
    db = tmp_path / "d.duckdb"
    pages = _committed(db, [150, 152, 148, 151, 100, 101, 99, 150])
    log = EventLog()
    _run(_pipeline(db, pages, [Volume(min_history=3, window=3)]), log)
    assert [e.batch_id for e in _failures(log)] == ["memory#4", "memory#5", "memory#7"]


def test_a_blocking_volume_check_rolls_the_outlier_back(tmp_path: Path) -> None:
    """Blocking, an outlier batch fails and nothing of it is published."""
    db = tmp_path / "d.duckdb"
    pages = _committed(db, [100, 102, 98, 101, 99, 150])
    with pytest.raises(CheckFailed, match=r"volume: 150 rows against a median of 100 over the "
                       r"last 5 batches: robust z-score \+33.73"):
        _run(_pipeline(db, pages, [Volume(blocking=True)]))
    assert _query(db, "SELECT count(*) FROM orders") == [(500,)]


def test_replays_neither_feed_nor_face_the_volume_history(tmp_path: Path) -> None:
    """Small replay loads (no position, ids ``replay:...``) are not judged by volume and do not
    drag the median down for the source's next batch."""
    sink = DuckDBSink(tmp_path / "d.duckdb", table="orders")
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
    sink.close()


# -- the destination after a failed blocking check -------------------------------------------


def _file_hash(db: Path) -> str:
    return hashlib.sha256(db.read_bytes()).hexdigest()


def _contents(db: Path) -> dict[str, tuple[Any, ...]]:
    """Every table's columns, types and a hash of its rows; sequences' next values."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall()]
        found: dict[str, tuple[Any, ...]] = {}
        for table in tables:
            columns = con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = ? ORDER BY ordinal_position", [table]).fetchall()
            rows = con.execute(
                f'SELECT count(*), coalesce(md5(string_agg(md5(CAST(t AS VARCHAR)), \',\' '
                f'ORDER BY md5(CAST(t AS VARCHAR)))), \'\') FROM "{table}" t').fetchall()
            found[table] = (tuple(columns), tuple(rows))
        sequences = con.execute("SELECT sequence_name, last_value FROM duckdb_sequences()")
        found["(sequences)"] = tuple(sequences.fetchall())
        return found
    finally:
        con.close()


def test_a_failing_blocking_check_leaves_the_destination_byte_identical(tmp_path: Path) -> None:
    """The failed batch carried new rows, a dead letter and a duplicate key: after the rollback
    and close, the file's bytes, every table and the checkpoint are as before; relaxed, the
    batch then loads exactly once."""
    db = tmp_path / "d.duckdb"
    first = _rows([1, 2], amount="1.5")
    second = [*_rows([2, 3], amount="2.5"), {"id": 4, "amount": "n/a"}]
    declared = {"amount": "double"}
    _run(_pipeline(db, [first], columns=declared))
    sink = DuckDBSink(db, table="orders")
    before_position = sink.position("orders")
    sink.close()
    before_bytes, before = _file_hash(db), _contents(db)
    assert before["_mendflow_dead_letters"][1] == ((0, ""),)

    with pytest.raises(CheckFailed):
        _run(_pipeline(db, [first, second], [UniqueKey(("id",))], columns=declared))

    assert _file_hash(db) == before_bytes  # DuckDB leaves the file untouched by a rollback
    assert _contents(db) == before
    sink = DuckDBSink(db, table="orders")
    assert sink.position("orders") == before_position == {"next": 1}
    sink.close()

    relaxed = [UniqueKey(("id",), blocking=False)]
    for _ in range(2):  # the second run finds nothing new
        _run(_pipeline(db, [first, second], relaxed, columns=declared))
    assert _query(db, "SELECT id, count(*) FROM orders GROUP BY id ORDER BY id") == [
        (1, 1), (2, 2), (3, 1)]
    assert _query(db, "SELECT batch_id, row_index FROM _mendflow_dead_letters") == [
        ("memory#1", 2)]
    assert _query(db, "SELECT batch_id FROM _mendflow_batches ORDER BY 1") == [
        ("memory#0",), ("memory#1",)]


def test_a_failing_first_batch_leaves_no_table_behind(tmp_path: Path) -> None:
    """The CREATE TABLE of the first batch is rolled back with it."""
    db = tmp_path / "d.duckdb"
    page = _rows(range(4), email=None)
    with pytest.raises(CheckFailed):
        _run(_pipeline(db, [page], [NullRate("email", max_rate=0.0)]))
    assert "orders" not in _contents(db)


# -- healing ---------------------------------------------------------------------------------


def test_healing_quarantines_a_batch_that_fails_a_blocking_check(tmp_path: Path) -> None:
    """The failing batch goes whole to the dead letters (not judged again), the run goes on,
    and the ledger holds a healed bad-data incident whose actions include the quarantine."""
    db, store = tmp_path / "d.duckdb", StateStore(f"sqlite:///{tmp_path / 's.db'}")
    pages = [_rows([1, 2]), _rows([2, 3]), _rows([4])]
    log = EventLog()
    result = run_healing(_pipeline(db, pages, [UniqueKey(("id",))]), store=store,
                         clock=FakeClock(), hooks=[log])
    assert (result.rows_loaded, result.dead_letters) == (1, 2)  # the run after the quarantine
    assert _query(db, "SELECT id FROM orders ORDER BY id") == [(1,), (2,), (4,)]
    assert _query(db, "SELECT batch_id, stage, count(*) FROM _mendflow_dead_letters "
                      "GROUP BY ALL") == [("memory#1", "quarantine", 2)]
    [event] = _failures(log)
    assert event.check == "unique_key(id)"
    [incident] = Ledger(store).incidents(pipeline="orders")
    assert (incident["failure_class"], incident["status"]) == ("bad_data", "healed")
    assert incident["evidence"]["error_type"] == "CheckFailed"
    actions = [(a["action"], a["outcome"]) for a in incident["actions"]]
    assert actions[0] == ("quarantine", "tried")
    assert ("quarantine", "succeeded") in actions
    store.close()


def test_with_no_healing_budget_a_failed_check_escalates_and_nothing_is_published(
    tmp_path: Path,
) -> None:
    """Budget spent: the incident is escalated and the error raised; the batch stays out."""
    db, store = tmp_path / "d.duckdb", StateStore(f"sqlite:///{tmp_path / 's.db'}")
    pages = [_rows([1], email="a@x"), _rows(range(5), email=None)]
    with pytest.raises(CheckFailed):
        run_healing(_pipeline(db, pages, [NullRate("email", max_rate=0.5)]), store=store,
                    clock=FakeClock(), healing=Healing(max_actions=0))
    [incident] = Ledger(store).incidents(pipeline="orders")
    assert (incident["failure_class"], incident["escalated"]) == ("bad_data", True)
    assert [a["action"] for a in incident["actions"]] == ["escalate"]
    assert _query(db, "SELECT id FROM orders") == [(1,)]
    store.close()


# -- pipeline files --------------------------------------------------------------------------


def test_checks_from_spec_builds_each_kind_with_its_severity() -> None:
    """The YAML shape: `check:` names the kind; severity block/warn; volume warns by default."""
    built = checks_from_spec(
        [
            {"check": "unique_key", "columns": ["id"]},
            {"check": "null_rate", "column": "email", "max_rate": 0.05, "severity": "warn"},
            {"check": "volume", "z": 3.5, "min_history": 5},
            {"check": "freshness", "column": "updated_at", "max_age_s": 86400},
        ],
        "p.yaml: checks",
    )
    assert built == (
        UniqueKey(("id",)),
        NullRate("email", max_rate=0.05, blocking=False),
        Volume(z=3.5, min_history=5),
        Freshness("updated_at", max_age_s=86400),
    )
    assert [c.blocking for c in built] == [True, False, False, True]
    assert checks_from_spec(None, "x") == ()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([{"check": "null_rate", "colum": "e", "max_rate": 0.1}],
         r"p.yaml: checks\[0\]: unknown key 'colum' \(did you mean 'column'\?\)"),
        ([{"check": "uniq_key", "columns": ["id"]}],
         r"checks\[0\]: unknown check a str \('uniq_key'\) \(did you mean 'unique_key'\?\)"),
        ([{"check": "volume", "severity": "warning"}],
         r"checks\[0\].severity must be block or warn, not a str \('warning'\) "
         r"\(did you mean 'warn'\?\)"),
        ([{"check": "freshness", "max_age_s": 60}], r"checks\[0\]: check freshness needs "
         r"`column:`"),
        ([{"check": "null_rate", "column": "e", "max_rate": 2}],
         r"checks\[0\]: NullRate max_rate must be within 0..1, not 2"),
        ([{"check": "null_rate", "column": "e", "max_rate": "5%"}],
         r"checks\[0\].max_rate must be a number, not a str"),
        ([{"check": "volume", "min_history": 50}], r"2 <= min_history <= window"),
        ([{"check": "reconciliation"}], "reconciliation always runs"),
        ({"check": "volume"}, r"p.yaml: checks must be a list"),
        (["volume"], r"checks\[0\] must be a mapping"),
    ],
)
def test_checks_from_spec_refuses_a_wrong_entry_saying_where_and_why(
    spec: Any, message: str
) -> None:
    """Each mistake is a ConfigError naming the entry and the fix."""
    with pytest.raises(ConfigError, match=message):
        checks_from_spec(spec, "p.yaml: checks")


def test_every_built_in_check_is_a_check() -> None:
    """The built-ins satisfy the Check protocol at run time."""
    for check in (Reconciliation(), UniqueKey(("id",)), NullRate("x", max_rate=0), Volume(),
                  Freshness("x", max_age_s=1)):
        assert isinstance(check, Check)


def _audit(data: pa.Table) -> Any:
    from mendflow.batch import Audit

    return Audit(pipeline="p", batch_id="b", table="t", records_read=data.num_rows,
                 rows_loaded=data.num_rows, dead_letters=0, data=data, history=(), now=NOW,
                 duplicate_keys=lambda _: 0)
