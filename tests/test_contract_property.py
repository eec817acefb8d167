"""Property: every record read ends in the table or in the dead-letter store, exactly once.

Hypothesis writes JSON-lines files with random bad values (wrong types, out of range, null keys),
malformed lines (broken JSON, invalid UTF-8, a non-object) and schema changes (a column added
mid-stream, a column dropped, values whose JSON type changes from line to line), loads them into
a real DuckDB file under a contract, and checks that the table's ids and the dead letters'
original bytes partition the input lines. Then the contract is relaxed and the dead letters are
replayed: the ones the new contract accepts move to the table, each exactly once; the rest stay.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mendflow import DuckDBSink, FileSource, Pipeline
from mendflow.contracts.contract import Contract
from mendflow.deadletter import replay

STRICT = {
    "columns": {
        "id": {"type": "bigint", "nullable": False},
        "amount": {"type": "double", "min": 0},
        "qty": {"type": "bigint", "min": 0, "max": 100},
    }
}
RELAXED = {
    "columns": {
        "id": {"type": "bigint", "nullable": False},
        "amount": {"type": "double"},
        "qty": {"type": "bigint"},
    }
}


@dataclass(frozen=True)
class Line:
    """One generated line: its bytes, and where it must end under each contract."""

    data: bytes
    id: int | None  # the id a loaded row carries (None: the line never loads)
    strict_ok: bool
    relaxed_ok: bool


_AMOUNTS = st.one_of(
    st.floats(0, 1e6, allow_nan=False).map(lambda v: (v, "ok")),
    st.floats(-1e6, -0.01).map(lambda v: (v, "range")),
    st.sampled_from(["12.5", "0", "3e2"]).map(lambda v: (v, "ok")),
    st.sampled_from(["n/a", "twelve", ""]).map(lambda v: (v, "type")),
    st.none().map(lambda v: (v, "ok")),
)
_QTYS = st.one_of(
    st.integers(0, 100).map(lambda v: (v, "ok")),
    st.integers(101, 10_000).map(lambda v: (v, "range")),
    st.integers(-50, -1).map(lambda v: (v, "range")),
    st.sampled_from(["7", "x"]).map(lambda v: (v, "ok" if v == "7" else "type")),
)
_KINDS = st.sampled_from(["good"] * 6 + ["broken", "utf8", "array", "null_id"])


@st.composite
def files(draw: st.DrawFn) -> list[list[Line]]:
    """Up to three files; the second may add a column, the third drop one."""
    out: list[list[Line]] = []
    next_id = 0
    for number in range(draw(st.integers(1, 3))):
        lines = []
        for _ in range(draw(st.integers(0, 25))):
            next_id += 1
            lines.append(_line(draw, next_id, number))
        out.append(lines)
    return out


def _line(draw: st.DrawFn, ident: int, file_number: int) -> Line:
    kind = draw(_KINDS)
    if kind == "broken":
        return Line(f'{{"id": {ident}, "amount": '.encode(), None, False, False)
    if kind == "utf8":
        return Line(b'{"id": %d, "note": "\xff\xfe"}' % ident, None, False, False)
    if kind == "array":
        return Line(f"[{ident}, 1]".encode(), None, False, False)
    (amount, amount_ok), (qty, qty_ok) = draw(_AMOUNTS), draw(_QTYS)
    record: dict[str, Any] = {"id": ident, "amount": amount}
    if kind == "null_id":
        record = {"id": None, "seq": ident, "amount": amount}  # seq keeps the line unique
    if file_number != 2:  # the third file drops qty
        record["qty"] = qty
    else:
        qty_ok = "ok"
    if file_number == 1:  # the second file adds a column
        record["channel"] = draw(st.sampled_from(["web", "store"]))
    verdicts = {amount_ok, qty_ok}
    keyed = kind != "null_id"
    strict = keyed and verdicts == {"ok"}
    relaxed = keyed and "type" not in verdicts
    return Line(json.dumps(record).encode(), ident if keyed else None, strict, relaxed)


def _pipeline(folder: Path, spec: dict[str, Any]) -> Pipeline:
    return Pipeline(
        name="prop",
        source=FileSource(folder / "*.jsonl", batch_size=7),
        destination=DuckDBSink(folder / "w.duckdb", table="t"),
        contract=Contract.from_spec(spec, "contract"),
    )


def _where(folder: Path) -> tuple[list[int], list[bytes]]:
    con = duckdb.connect(str(folder / "w.duckdb"), read_only=True)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        ids = [r[0] for r in con.execute("SELECT id FROM t").fetchall()] if "t" in tables else []
        found = con.execute("SELECT record FROM _mendflow_dead_letters").fetchall()
        dead = [bytes(r[0]) for r in found]
    finally:
        con.close()
    return ids, dead


def _check_partition(folder: Path, lines: list[Line], *, relaxed: bool) -> None:
    ids, dead = _where(folder)
    assert len(ids) == len(set(ids)), "a row was loaded twice"
    assert len(dead) == len(set(dead)), "a record was dead-lettered twice"
    loaded = {line.id for line in lines if (line.relaxed_ok if relaxed else line.strict_ok)}
    assert set(ids) == loaded
    assert set(dead) == {line.data for line in lines if line.id not in loaded or line.id is None}
    assert len(ids) + len(dead) == len(lines)


@settings(
    max_examples=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(files())
def test_every_record_lands_once_and_replay_after_a_fix_moves_it_once(
    generated: list[list[Line]],
) -> None:
    """Each line ends in the table or the dead letters exactly once, before and after replay."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for number, lines in enumerate(generated):
            body = b"".join(line.data + b"\n" for line in lines)
            (folder / f"part-{number}.jsonl").write_bytes(body)
        every = [line for lines in generated for line in lines]
        _pipeline(folder, STRICT).run()
        _check_partition(folder, every, relaxed=False)
        _pipeline(folder, STRICT).run()  # a second run reads nothing new
        _check_partition(folder, every, relaxed=False)
        replay(_pipeline(folder, RELAXED))
        _check_partition(folder, every, relaxed=True)
        replay(_pipeline(folder, RELAXED))  # what stays is still bad: nothing moves twice
        _check_partition(folder, every, relaxed=True)
