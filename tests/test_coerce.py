"""Declared types (the ``columns:`` shorthand) are applied to the whole batch; rows that do not
fit become dead letters."""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa

from mendflow.contracts.contract import Contract
from mendflow.contracts.validate import set_aside, validate


def test_types_keep_good_rows_and_report_each_failure() -> None:
    """One row per failure kind: a non-number, a non-integer, and a null kept as null."""
    con = duckdb.connect()
    table = pa.table({"id": [1, 2, 3, 4], "amount": ["1.5", "n/a", None, "2"],
                      "qty": ["2", "3", "4", "x"]})
    contract = Contract.of_types({"amount": "double", "qty": "bigint"})
    good, dead = validate(con, table, contract)
    assert good.to_pylist() == [{"id": 1, "amount": 1.5, "qty": 2},
                                {"id": 3, "amount": None, "qty": 4}]
    assert dead.column("row_index").to_pylist() == [1, 3]
    assert dead.column("stage").to_pylist() == ["coerce", "coerce"]
    assert dead.column("reason").to_pylist() == [
        "amount: n/a is not double",
        "qty: x is not bigint",
    ]
    assert json.loads(dead.column("record")[0].as_py()) == {"id": 2, "amount": "n/a", "qty": "3"}


def test_a_null_primary_key_is_a_dead_letter() -> None:
    """A row that merge could not place (null key) is set aside, not loaded."""
    con = duckdb.connect()
    good, dead = validate(con, pa.table({"id": [1, None]}), Contract(), keys=("id",))
    assert good.column("id").to_pylist() == [1]
    assert dead.column("reason").to_pylist() == ["id: primary key is null"]
    assert dead.column("stage").to_pylist() == ["validate"]


def test_nothing_declared_returns_the_batch_untouched() -> None:
    """With no declared types and no null keys, the batch passes as it is, no copy."""
    con = duckdb.connect()
    table = pa.table({"id": [1, 2]})
    good, dead = validate(con, table, Contract(), keys=("id",))
    assert good is table
    assert dead.num_rows == 0


def test_set_aside_keeps_every_row_with_the_reason_and_raw_bytes() -> None:
    """A quarantined batch: every row a dead letter, its record the original bytes if kept."""
    con = duckdb.connect()
    table = pa.table({"id": [1, 2]})
    raw = pa.array([b'{"id":1}', b'{"id": 2 }'])
    dead = set_aside(con, table, reason="quarantined: boom", raw=raw)
    assert dead.column("row_index").to_pylist() == [0, 1]
    assert dead.column("record").to_pylist() == [b'{"id":1}', b'{"id": 2 }']
    assert set(dead.column("stage").to_pylist()) == {"quarantine"}
    without = set_aside(con, table, reason="r")
    assert json.loads(without.column("record")[1].as_py()) == {"id": 2}
