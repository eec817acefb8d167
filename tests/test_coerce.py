"""Declared types are applied to the whole batch; rows that do not fit become dead letters."""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa

from mendflow._coerce import split


def test_split_keeps_good_rows_and_reports_each_failure() -> None:
    """One row per failure kind: a non-number, a non-integer, and a null kept as null."""
    con = duckdb.connect()
    table = pa.table({"id": [1, 2, 3, 4], "amount": ["1.5", "n/a", None, "2"],
                      "qty": ["2", "3", "4", "x"]})
    good, dead = split(con, table, types={"amount": "DOUBLE", "qty": "BIGINT"})
    assert good.to_pylist() == [{"id": 1, "amount": 1.5, "qty": 2},
                                {"id": 3, "amount": None, "qty": 4}]
    assert dead.column("row_index").to_pylist() == [1, 3]
    assert dead.column("reason").to_pylist() == [
        "amount: n/a is not DOUBLE",
        "qty: x is not BIGINT",
    ]
    assert json.loads(dead.column("record")[0].as_py()) == {"id": 2, "amount": "n/a", "qty": "3"}


def test_a_null_primary_key_is_a_dead_letter() -> None:
    """A row that merge could not place (null key) is set aside, not loaded."""
    con = duckdb.connect()
    good, dead = split(con, pa.table({"id": [1, None]}), types={}, not_null=("id",))
    assert good.column("id").to_pylist() == [1]
    assert dead.column("reason").to_pylist() == ["id: primary key is null"]


def test_nothing_declared_returns_the_batch_untouched() -> None:
    """With no declared types and no null keys, the batch passes as it is, no copy."""
    con = duckdb.connect()
    table = pa.table({"id": [1, 2]})
    good, dead = split(con, table, types={"other": "DOUBLE"}, not_null=("id",))
    assert good is table
    assert dead.num_rows == 0
