"""Input that cannot be parsed is a dead letter of stage ``parse``, kept byte-exact."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from mendflow import ConfigError, DuckDBSink, FileSource, Pipeline
from mendflow.batch import Batch

GOOD = [b'{"id": %d, "name": "n%d", "amount": %d.5}' % (i, i, i) for i in range(1, 41)]
BAD = {
    "broken": b'{"id": 100, "name": ',
    "utf8": b'{"id": 101, "name": "\xff\xfe"}',
    "array": b"[1, 2, 3]",
    "null": b"null",
    "oversized": b'{"id": 102, "name": "' + b"x" * 300 + b'"}',
}


def _jsonl(path: Path) -> list[bytes]:
    """Good lines with every kind of bad line spread among them, a blank line and CRLF ends."""
    lines = [*GOOD[:5], BAD["broken"], *GOOD[5:12], BAD["utf8"], BAD["array"]]
    lines += [*GOOD[12:25], BAD["null"], BAD["oversized"], *GOOD[25:]]
    path.write_bytes(b"\n".join(lines[:10]) + b"\n\n  \n" + b"\r\n".join(lines[10:]) + b"\n")
    return lines


def _read(source: FileSource, position: dict[str, object] | None = None) -> list[Batch]:
    return list(source.read(position or {}))


def _rejects(batches: list[Batch]) -> pa.Table:
    return pa.concat_tables([b.rejects for b in batches])


def _dead_letters(db: Path) -> list[tuple[str, bytes, str, str]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT stage, record, format, reason FROM _mendflow_dead_letters ORDER BY id"
        ).fetchall()
    finally:
        con.close()
    return [(str(s), bytes(r), str(f), str(why)) for s, r, f, why in rows]


def test_every_bad_json_line_is_a_byte_exact_reject_with_its_reason(tmp_path: Path) -> None:
    """Broken, non-UTF-8, non-object, oversized and misfit lines are rejects; the rest rows."""
    path = tmp_path / "a.jsonl"
    _jsonl(path)
    batches = _read(FileSource(path, max_field_bytes=256))
    rejects = _rejects(batches)
    assert sum(b.data.num_rows for b in batches) == len(GOOD)
    assert sorted(rejects["record"].to_pylist()) == sorted(BAD.values())
    assert set(rejects["stage"].to_pylist()) == {"parse"}
    by_record = dict(zip(rejects["record"].to_pylist(), rejects.to_pylist(), strict=True))
    assert by_record[BAD["utf8"]]["format"] == "bytes"
    assert by_record[BAD["broken"]]["format"] == "json"
    assert by_record[BAD["broken"]]["reason"].startswith("line 6: not valid JSON: ")
    assert "not valid UTF-8" in by_record[BAD["utf8"]]["reason"]
    assert "must be a JSON object" in by_record[BAD["array"]]["reason"]
    assert "must be a JSON object" in by_record[BAD["null"]]["reason"]
    assert "field `name` is 300 bytes, over the limit of 256 (max_field_bytes)" in (
        by_record[BAD["oversized"]]["reason"])
    checks = json.loads(by_record[BAD["oversized"]]["checks"])
    assert checks == [{"check": "max_field_bytes", "column": "name",
                       "message": checks[0]["message"]}]


def test_each_row_carries_its_original_line(tmp_path: Path) -> None:
    """``Batch.raw`` holds each row's line, byte-exact and aligned with the data."""
    path = tmp_path / "a.jsonl"
    _jsonl(path)
    batches = _read(FileSource(path, max_field_bytes=256, batch_size=7))
    raw = [line for b in batches if b.raw is not None for line in b.raw.to_pylist()]
    ids = [i for b in batches for i in b.data["id"].to_pylist()]
    assert raw == GOOD
    assert ids == list(range(1, 41))


def test_rows_plus_rejects_equal_the_records_in_the_file(tmp_path: Path) -> None:
    """Every non-blank line is either a row or a reject, at every batch size."""
    path = tmp_path / "a.jsonl"
    lines = _jsonl(path)
    for size in (1, 3, 8, 1000):
        batches = _read(FileSource(path, max_field_bytes=256, batch_size=size))
        assert sum(b.records for b in batches) == len(lines)
        assert all(b.records == size for b in batches[:-1])


def test_a_resumed_read_yields_the_rest_with_each_reject_once(tmp_path: Path) -> None:
    """Resuming from any batch's position gives the same later batches; no reject repeats."""
    path = tmp_path / "a.jsonl"
    _jsonl(path)
    source = FileSource(path, max_field_bytes=256, batch_size=6)
    every = _read(source)
    for k in range(len(every)):
        rest = _read(source, every[k].position)
        assert [b.id for b in rest] == [b.id for b in every[k + 1 :]]
        seen = _rejects(every[: k + 1] + rest)["record"].to_pylist()
        assert sorted(seen) == sorted(BAD.values())


def test_an_older_position_counting_records_only_still_resumes(tmp_path: Path) -> None:
    """A position written before byte offsets (rows only) resumes after that many records."""
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"\n".join(GOOD) + b"\n")
    source = FileSource(path, batch_size=10)
    every = _read(source)
    state = {k: v for k, v in every[0].position["files"]["a.jsonl"].items() if k in ("fp", "rows")}
    rest = _read(source, {"files": {"a.jsonl": {**state, "done": False}}})
    assert [b.id for b in rest] == [b.id for b in every[1:]]


def test_a_file_of_bad_lines_only_and_an_empty_file(tmp_path: Path) -> None:
    """All-bad lines are all rejects and no rows; an empty file is one empty, finished batch."""
    (tmp_path / "bad.jsonl").write_bytes(b"\n".join([BAD["broken"], BAD["utf8"], b"7"]))
    (tmp_path / "empty.jsonl").write_bytes(b"")
    bad = _read(FileSource(tmp_path / "bad.jsonl"))
    assert sum(b.data.num_rows for b in bad) == 0
    assert _rejects(bad)["record"].to_pylist() == [BAD["broken"], BAD["utf8"], b"7"]
    assert bad[-1].position["files"]["bad.jsonl"]["done"]
    empty = _read(FileSource(tmp_path / "empty.jsonl"))
    assert [(b.records, b.position["files"]["empty.jsonl"]["done"]) for b in empty] == [(0, True)]


def test_declared_columns_arrive_as_text(tmp_path: Path) -> None:
    """A column the pipeline declared is read as text (a number as DuckDB writes it)."""
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"id": 1, "amount": 12.5}\n{"id": 2, "amount": "n/a"}\n')
    data = _read(FileSource(path).reading_as_text(["amount"]))[0].data
    assert data["amount"].to_pylist() == ["12.5", "n/a"]
    assert pa.types.is_integer(data.schema.field("id").type)


def test_a_value_that_does_not_fit_the_detected_type_is_a_reject(tmp_path: Path) -> None:
    """Past the sample the types come from, a value its column's type cannot hold is set aside
    with the column named, never loaded as NULL; declared as text, it is a row."""
    path = tmp_path / "a.jsonl"
    misfit = b'{"id": "one hundred", "name": "q", "amount": 1.5}'
    lines = [b'{"id": %d, "name": "n", "amount": 1.5}' % i for i in range(20_500)]
    path.write_bytes(b"\n".join([*lines, misfit]) + b"\n")
    batches = _read(FileSource(path))
    rejects = _rejects(batches)
    assert rejects["record"].to_pylist() == [misfit]
    assert "line 20501: field `id` is \"one hundred\", not BIGINT" in rejects["reason"][0].as_py()
    assert sum(b.data.num_rows for b in batches) == len(lines)
    as_text = _read(FileSource(path).reading_as_text(["id"]))
    assert sum(b.data.num_rows for b in as_text) == len(lines) + 1


def test_a_number_its_integer_column_cannot_hold_exactly_is_a_reject(tmp_path: Path) -> None:
    """Nothing is rounded or converted silently: in a column detected as BIGINT, 1.7, true, a
    quoted number and values over its range are set aside naming the column, the value and the
    type (on the fast path too: a chunk holding one is not loaded converted); an integral number
    such as 3.0 or -1.5e3 loads as that integer."""
    path = tmp_path / "a.jsonl"
    lines = [b'{"id": %d, "ok": true, "x": 0.5}' % i for i in range(20_500)]
    misfits = [b"1.7", b"true", b'"007"', b"1e30", b"9223372036854775808", b"-2.5"]
    tail = [b'{"id": %s, "ok": true, "x": 0.5}' % v for v in [*misfits, b"3.0", b"-1.5e3"]]
    path.write_bytes(b"\n".join([*lines, *tail]) + b"\n")
    batches = _read(FileSource(path, batch_size=5000))
    rejects = _rejects(batches)
    assert rejects["record"].to_pylist() == tail[:-2]
    for value, reason in zip(misfits, rejects["reason"].to_pylist(), strict=True):
        assert f"field `id` is {value.decode()}, not BIGINT" in reason
        assert "declare the column's type under `columns:`" in reason
    assert {c["column"] for r in rejects["checks"].to_pylist() for c in json.loads(r)} == {"id"}
    ids = [i for b in batches for i in b.data["id"].to_pylist()]
    assert ids == [*range(20_500), 3, -1500]


def test_a_boolean_or_double_column_takes_only_its_own_kind(tmp_path: Path) -> None:
    """A number in a BOOLEAN column and a boolean or quoted number in a DOUBLE column are
    rejects; an integer in a DOUBLE column is a number like any other."""
    path = tmp_path / "a.jsonl"
    lines = [b'{"ok": true, "x": 0.5}'] * 20_500
    tail = [b'{"ok": 1, "x": 0.5}', b'{"ok": true, "x": true}', b'{"ok": false, "x": "2.5"}']
    path.write_bytes(b"\n".join([*lines, *tail, b'{"ok": false, "x": 2}']) + b"\n")
    batches = _read(FileSource(path))
    reasons = _rejects(batches)["reason"].to_pylist()
    assert [r.split(" (")[0] for r in reasons] == [
        "line 20501: field `ok` is 1, not BOOLEAN",
        "line 20502: field `x` is true, not DOUBLE",
        'line 20503: field `x` is "2.5", not DOUBLE',
    ]
    assert pa.concat_tables([b.data for b in batches]).slice(20_500).to_pylist() == [
        {"ok": False, "x": 2.0}]


def test_limits_must_be_positive() -> None:
    """A limit of zero or less is a configuration error."""
    with pytest.raises(ConfigError, match="max_field_bytes"):
        FileSource("x.jsonl", max_field_bytes=0)
    with pytest.raises(ConfigError, match="max_record_bytes"):
        FileSource("x.jsonl", max_record_bytes=-1)


def test_an_over_long_line_is_a_reject(tmp_path: Path) -> None:
    """A line over ``max_record_bytes`` is set aside with the limit named."""
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"\n".join([*GOOD[:3], BAD["oversized"]]))
    batches = _read(FileSource(path, max_record_bytes=100))
    assert _rejects(batches)["record"].to_pylist() == [BAD["oversized"]]
    assert "(max_record_bytes)" in _rejects(batches)["reason"][0].as_py()


def _csv(path: Path) -> tuple[list[bytes], list[bytes]]:
    good = [b"%d,n%d,%d.5" % (i, i, i) for i in range(1, 80)]
    bad = [b"200,ragged,1.5,extra", b"201,\xff\xfe,2.5", b"202"]
    lines = [b"id,name,amount", *good[:30], bad[0], *good[30:50], bad[1], *good[50:], bad[2]]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return good, bad


def test_bad_csv_rows_ride_on_the_files_last_batch(tmp_path: Path) -> None:
    """Ragged and non-UTF-8 CSV rows are rejects (format csv, byte-exact) on the last batch."""
    path = tmp_path / "a.csv"
    good, bad = _csv(path)
    batches = _read(FileSource(path, batch_size=25))
    assert sum(b.data.num_rows for b in batches) == len(good)
    assert [b.rejects.num_rows for b in batches] == [0, 0, 0, len(bad)]
    last = batches[-1].rejects
    assert last["record"].to_pylist() == bad
    assert set(last["format"].to_pylist()) == {"csv"}
    assert "too many columns" in last["reason"][0].as_py()
    resumed = _read(FileSource(path, batch_size=25), batches[1].position)
    assert [b.rejects.num_rows for b in resumed] == [0, len(bad)]
    assert [b.id for b in resumed] == [b.id for b in batches[2:]]


def test_a_pipeline_loads_the_good_rows_and_dead_letters_the_bad_lines(tmp_path: Path) -> None:
    """Through a real run, each unparsable line lands in the dead-letter store byte-exact."""
    _jsonl(tmp_path / "a.jsonl")
    _csv(tmp_path / "b.csv")
    db = tmp_path / "d.duckdb"
    for name, pattern in (("j", "*.jsonl"), ("c", "*.csv")):
        source = FileSource(tmp_path / pattern, batch_size=8, max_field_bytes=256)
        result = Pipeline(name=name, source=source,
                          destination=DuckDBSink(db, table=f"t_{name}")).run()
        assert result.rows_loaded + result.dead_letters == result.rows_read
    letters = _dead_letters(db)
    assert sorted(r for _, r, f, _ in letters if f != "csv") == sorted(BAD.values())
    assert [r for _, r, f, _ in letters if f == "csv"] == _csv(tmp_path / "c.csv")[1]
    assert {s for s, *_ in letters} == {"parse"}
    con = duckdb.connect(str(db), read_only=True)
    try:
        counts = [con.execute(f"SELECT count(*) FROM t_{n}").fetchone() for n in "jc"]
    finally:
        con.close()
    assert counts == [(len(GOOD),), (79,)]
