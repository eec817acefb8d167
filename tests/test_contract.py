"""Record contracts: each check, each on_error policy, coercion, reasons, records, YAML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import yaml

from mendflow import ConfigError, DuckDBSink, Pipeline
from mendflow.contracts import Column, Contract, Expr, Length, Matches, OneOf, Range
from mendflow.contracts.validate import validate
from mendflow.exceptions import BadData
from mendflow.testing import MemorySource


def split(table: pa.Table, contract: Contract, **kwargs: Any) -> tuple[pa.Table, pa.Table]:
    return validate(duckdb.connect(), table, contract, **kwargs)


def checks_of(dead: pa.Table) -> list[list[tuple[str, str | None]]]:
    """Each dead letter's failed checks as (check, column) pairs."""
    return [[(c["check"], c["column"]) for c in json.loads(text)]
            for text in dead.column("checks").to_pylist()]


def test_range_is_inclusive_and_open_sides_are_open() -> None:
    """Values at the bounds pass; below min or above max fail with a message naming the value."""
    table = pa.table({"a": ["0", "10", "-1", "11"], "b": [5, 500, 5, 5]})
    contract = Contract({"a": Column("double", checks=(Range(0, 10),)),
                         "b": Column("bigint", checks=(Range(max=100),))})
    good, dead = split(table, contract)
    assert good.column("a").to_pylist() == [0.0]
    assert dead.column("row_index").to_pylist() == [1, 2, 3]
    assert dead.column("reason").to_pylist() == [
        "b: 500 is above the maximum 100",
        "a: -1 is outside [0, 10]",
        "a: 11 is outside [0, 10]",
    ]
    assert set(dead.column("stage").to_pylist()) == {"validate"}


def test_one_of_regex_and_length() -> None:
    """Allowed values, a searched regex and a length window each fail their own rows."""
    table = pa.table({"status": ["new", "lost", "paid", "new"],
                      "email": ["a@b", "a@b", "nobo", "a@bcdefghijk"]})
    contract = Contract({
        "status": Column("varchar", checks=(OneOf(("new", "paid")),)),
        "email": Column("varchar", checks=(Matches("^[^@]+@[^@]+$"), Length(min=3, max=5))),
    })
    good, dead = split(table, contract)
    assert good.to_pylist() == [{"status": "new", "email": "a@b"}]
    assert checks_of(dead) == [[("in", "status")], [("regex", "email")], [("length", "email")]]
    assert dead.column("reason")[0].as_py() == "status: lost is not one of: new, paid"


def test_unique_key_keeps_the_first_row_of_each_key() -> None:
    """Every row after the first with the same key is a dead letter: "duplicate key"."""
    table = pa.table({"id": ["1", "2", "01", "2", None, None]})
    good, dead = split(table, Contract({"id": Column("bigint")}, unique=("id",)))
    assert good.column("id").to_pylist() == [1, 2, None, None]
    assert dead.column("row_index").to_pylist() == [2, 3]  # "01" is 1 once typed
    assert dead.column("reason").to_pylist() == ["id: duplicate key"] * 2


def test_expression_fails_rows_where_it_is_false_over_typed_values() -> None:
    """An Expr sees typed values; false fails the row, null passes (an SQL CHECK)."""
    table = pa.table({"total": ["6", "7", None], "amount": ["2", "2", "1"], "qty": [3, 3, 1]})
    contract = Contract({"total": Column("double"), "amount": Column("double")},
                        expressions=(Expr("total_matches", "total = amount * qty"),))
    good, dead = split(table, contract)
    assert good.column("total").to_pylist() == [6.0, None]
    assert dead.column("reason").to_pylist() == ["total_matches: total = amount * qty is false"]
    assert checks_of(dead) == [[("expression", None)]]


def test_expression_naming_an_unknown_column_is_a_config_error() -> None:
    """A contract that does not fit the batch says so instead of failing obscurely."""
    contract = Contract(expressions=(Expr("x", "nope > 1"),))
    with pytest.raises(ConfigError, match="does not fit"):
        split(pa.table({"a": [1]}), contract)


def test_coercion_of_numbers_and_iso_timestamps() -> None:
    """'12.5' becomes a double and ISO strings (with offsets) become timestamps."""
    table = pa.table({"amount": ["12.5", "3"], "at": ["2024-01-01T10:00:00Z",
                                                      "2024-01-01T12:00:00+02:00"]})
    contract = Contract({"amount": Column("double"), "at": Column("timestamptz")})
    good, dead = split(table, contract)
    assert dead.num_rows == 0
    assert good.column("amount").to_pylist() == [12.5, 3.0]
    assert pa.types.is_timestamp(good.schema.field("at").type)
    assert good.column("at").cast(pa.int64()).to_pylist() == [1704103200000000] * 2


def test_on_error_dead_letter_sends_the_row_to_stage_coerce_with_every_reason() -> None:
    """A value that does not cast makes the row a coerce dead letter; its check failures too."""
    table = pa.table({"amount": ["n/a", "5"], "status": ["lost", "new"]})
    contract = Contract({"amount": Column("double"),
                         "status": Column("varchar", checks=(OneOf(("new",)),))})
    good, dead = split(table, contract)
    assert good.num_rows == 1
    assert dead.column("stage").to_pylist() == ["coerce"]
    assert dead.column("reason").to_pylist() == [
        "amount: n/a is not double; status: lost is not one of: new"
    ]


def test_on_error_null_keeps_the_row_with_a_null_value() -> None:
    """on_error null: the value becomes null and the row is loaded."""
    table = pa.table({"amount": ["n/a", "5"]})
    good, dead = split(table, Contract({"amount": Column("double", on_error="null")}))
    assert good.column("amount").to_pylist() == [None, 5.0]
    assert dead.num_rows == 0


def test_on_error_null_on_a_required_column_is_a_not_null_failure() -> None:
    """A value nulled by on_error null still has to satisfy nullable: false."""
    table = pa.table({"amount": ["n/a", "5"]})
    contract = Contract({"amount": Column("double", nullable=False, on_error="null")})
    good, dead = split(table, contract)
    assert good.num_rows == 1
    assert dead.column("reason").to_pylist() == ["amount: is null"]


def test_on_error_fail_raises_bad_data_naming_column_value_and_type() -> None:
    """on_error fail stops the batch with BadData saying what to do."""
    table = pa.table({"at": ["2024-01-01", "soon"]})
    with pytest.raises(BadData, match=r"'at': value 'soon' \(row 1.*timestamptz.*on_error"):
        split(table, Contract({"at": Column("timestamptz", on_error="fail")}))


def test_missing_required_column_sends_every_row_away_as_column_missing() -> None:
    """A declared column absent from the batch is all nulls; a required one fails every row."""
    table = pa.table({"id": [1, 2]})
    contract = Contract({"id": Column("bigint"), "email": Column("varchar", nullable=False),
                         "note": Column("varchar")})
    good, dead = split(table, contract)
    assert good.num_rows == 0
    assert dead.column("reason").to_pylist() == ["email: column missing"] * 2
    good, _ = split(table, Contract({"note": Column("varchar")}))
    assert good.to_pylist() == [{"id": 1, "note": None}, {"id": 2, "note": None}]


def test_reasons_only_for_bad_rows_and_every_row_accounted_for() -> None:
    """Good + dead = input; dead rows carry every failed check; good rows carry nothing extra."""
    rows = 1000
    table = pa.table({
        "id": [str(i) for i in range(rows)],
        "amount": ["x" if i % 50 == 0 else str(i % 200) for i in range(rows)],
        "status": ["lost" if i % 70 == 0 else "new" for i in range(rows)],
        "other": list(range(rows)),
    })
    contract = Contract({
        "id": Column("bigint", nullable=False),
        "amount": Column("double", checks=(Range(0, 150),)),
        "status": Column("varchar", checks=(OneOf(("new",)),)),
    }, unique=("id",))
    good, dead = split(table, contract)
    assert good.num_rows + dead.num_rows == rows
    assert good.column_names == ["id", "amount", "status", "other"]
    expected = {i for i in range(rows) if i % 50 == 0 or i % 200 > 150 or i % 70 == 0}
    assert set(dead.column("row_index").to_pylist()) == expected
    both = dead.filter(pa.compute.equal(dead["row_index"], 0)).column("checks")[0].as_py()
    assert [c["check"] for c in json.loads(both)] == ["type", "in"]
    assert dead.column("reason").null_count == 0
    assert dead.column("checks").null_count == 0


def test_record_is_the_raw_bytes_when_given_else_the_row_as_read() -> None:
    """With raw, a dead letter's record is byte-exact; without, the pre-cast row as JSON."""
    table = pa.table({"amount": ["1", "n/a"], "id": [1, 2]})
    raw = pa.array([b'{"amount":"1","id":1}', b'{ "amount" : "n/a", "id": 2 }\xc3\xa9'])
    contract = Contract({"amount": Column("double")})
    _, dead = split(table, contract, raw=raw)
    assert dead.column("record").to_pylist() == [b'{ "amount" : "n/a", "id": 2 }\xc3\xa9']
    assert dead.column("format").to_pylist() == ["json"]
    _, dead = split(table, contract)
    assert json.loads(dead.column("record")[0].as_py()) == {"amount": "n/a", "id": 2}


YAML = """
columns:
  id: {type: bigint, nullable: false}
  amount: {type: double, min: 0, max: 100000}
  status: {type: varchar, in: [new, paid, shipped], on_error: null}
  email: {type: varchar, regex: '^[^@]+@[^@]+$', max_length: 254}
  created_at: {type: timestamptz, on_error: fail}
unique: [id]
expressions:
  - {name: total_matches, sql: "total = amount * qty"}
"""


def test_from_spec_reads_the_documented_yaml() -> None:
    """The YAML shape builds the contract it reads as, with YAML's null meaning on_error null."""
    contract = Contract.from_spec(yaml.safe_load(YAML), "orders.yaml: contract")
    assert contract.columns["id"] == Column("bigint", nullable=False)
    assert contract.columns["amount"].checks == (Range(0, 100000),)
    assert contract.columns["status"].on_error == "null"
    assert contract.columns["email"].checks == (Matches("^[^@]+@[^@]+$"), Length(max=254))
    assert contract.unique == ("id",)
    assert contract.expressions == (Expr("total_matches", "total = amount * qty"),)


def test_to_spec_round_trips_through_yaml() -> None:
    """to_spec gives a mapping from_spec reads back as the same contract."""
    contract = Contract.from_spec(yaml.safe_load(YAML))
    again = Contract.from_spec(yaml.safe_load(yaml.safe_dump(contract.to_spec())))
    assert again == contract


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"columns": {"id": {"type": "bigint", "nulable": False}}},
         r"contract.columns.id: unknown key 'nulable' \(did you mean 'nullable'\?\)"),
        ({"colums": {}}, r"unknown key 'colums' \(did you mean 'columns'\?\)"),
        ({"columns": {"e": {"type": "varchar", "regex": "(unclosed"}}},
         r"contract.columns.e: regex '\(unclosed' does not compile .*write an RE2 pattern"),
        ({"columns": {"a": {"type": "double", "min": 5, "max": 1}}},
         r"range min 5 is greater than max 1; swap them"),
        ({"columns": {"a": {"type": "dubble"}}}, r"unknown column type 'dubble'; use one of"),
        ({"columns": {"a": {"type": "double", "on_error": "skip"}}},
         r"unknown policy 'skip'; use one of: dead_letter, null, fail"),
        ({"columns": {"a": "double"}, "unique": ["b"]}, r"'b' is not a declared column"),
        ({"expressions": [{"name": "x", "sql": "1); DROP TABLE t; SELECT (1"}]},
         r"not one expression; drop the ';'"),
        ({"columns": {"a": {"type": "varchar", "in": "new"}}}, r"`in:` must be a list"),
    ],
)
def test_from_spec_refuses_bad_contracts_saying_what_to_write(
    spec: dict[str, Any], message: str
) -> None:
    """Unknown keys come with a suggestion; bad values say what to write instead."""
    with pytest.raises(ConfigError, match=message):
        Contract.from_spec(spec, "contract")


def test_pipeline_contract_end_to_end_into_duckdb(tmp_path: Path) -> None:
    """Through Pipeline(contract=...).run(): table rows + dead letters = rows read."""
    rows = [{"id": str(i), "amount": "n/a" if i % 7 == 0 else str(i), "status":
             "lost" if i % 11 == 0 else "new"} for i in range(1, 101)]
    rows.append({"id": "5", "amount": "5", "status": "new"})  # a repeated key
    db = tmp_path / "d.duckdb"
    contract = Contract({"id": Column("bigint", nullable=False),
                         "amount": Column("double", checks=(Range(min=0),)),
                         "status": Column("varchar", checks=(OneOf(("new",)),))},
                        unique=("id",))
    result = Pipeline(name="p", source=MemorySource([rows]), destination=DuckDBSink(db, table="t"),
                      contract=contract).run()
    with duckdb.connect(str(db)) as con:
        loaded = con.sql("SELECT count(*), typeof(any_value(amount)) FROM t").fetchall()[0]
        stages = dict(con.sql("SELECT stage, count(*) FROM _mendflow_dead_letters GROUP BY 1"
                              ).fetchall())
    bad = {i for i in range(1, 101) if i % 7 == 0 or i % 11 == 0}
    assert loaded == (100 - len(bad), "DOUBLE")
    assert stages == {"coerce": 14, "validate": len(bad) - 14 + 1}
    assert (result.rows_read, result.rows_loaded + result.dead_letters) == (101, 101)


def test_pipeline_columns_and_contract_merge_the_contract_winning() -> None:
    """columns is shorthand for a types-only contract; a column in both takes the contract's."""
    pipeline = Pipeline(
        name="p", source=MemorySource([]), destination=DuckDBSink(":memory:", table="t"),
        columns={"a": "double", "b": "bigint"},
        contract=Contract({"b": Column("varchar", nullable=False)}),
    )
    contract = pipeline.record_contract
    assert contract is not None
    assert contract.columns == {"a": Column("double"), "b": Column("varchar", nullable=False)}
    assert pipeline.types == {"a": "DOUBLE", "b": "VARCHAR"}
