"""Schema drift at a DuckDB destination: evolve, freeze and discard_columns, and the history."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pytest
from click.testing import CliRunner

from mendflow._cli_schema import schema
from mendflow.batch import SCHEMA_POLICIES, Load, SchemaPolicy
from mendflow.contracts.schema import Column, common, diff, fits, plan
from mendflow.events import BatchQuarantined, SchemaChanged
from mendflow.pipeline import Pipeline
from mendflow.sinks._pg_schema import columns_of
from mendflow.sinks.duckdb import DuckDBSink
from mendflow.sinks.postgres import PostgresSink
from mendflow.sources.files import FileSource
from mendflow.testing import MemorySource, capture_events
from mendflow.typing import Sink

EVIL = 'x"; DROP TABLE orders; --'
HOSTILE = (EVIL, "it's", "two words", "ünïcødé", "select", "a.b")


def _load(batch_id: str, data: pa.Table | list[dict[str, Any]], **kw: Any) -> Load:
    table = data if isinstance(data, pa.Table) else pa.Table.from_pylist(data)
    return Load(
        pipeline="p", run_id="r1", batch_id=batch_id, data=table, position={"at": batch_id}, **kw
    )


@pytest.fixture(params=["duckdb", "postgres"])
def dest(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where the sink loads: a DuckDB file's folder, or a fresh PostgreSQL database's URL."""
    if request.param == "duckdb":
        return tmp_path
    return str(request.getfixturevalue("pg_url"))


def _query(sink: Sink, sql: str) -> list[tuple[Any, ...]]:
    """Close the sink (it reopens on its next write) and read its database."""
    sink.close()
    if isinstance(sink, PostgresSink):
        with psycopg.connect(sink.url) as pg:
            return [tuple(row) for row in pg.execute(sql).fetchall()]
    assert isinstance(sink, DuckDBSink)
    con = duckdb.connect(sink.path, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _types(sink: Sink, table: str = "t") -> dict[str, str]:
    """The table's column types, in the canonical spelling (PostgreSQL's translated)."""
    if isinstance(sink, PostgresSink):
        sink.close()
        with psycopg.connect(sink.url) as pg, pg.cursor() as cur:
            return {c.name: c.type for c in columns_of(cur, "public", table).columns}
    sql = (
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = "
        f"'{table}' ORDER BY ordinal_position"
    )
    return dict(_query(sink, sql))


def _dead(sink: Sink) -> list[tuple[Any, ...]]:
    return _query(
        sink,
        "SELECT batch_id, row_index, stage, reason, checks, record, format "
        "FROM _mendflow_dead_letters ORDER BY id",
    )


def _sink(dest: Path | str, table: str = "t") -> DuckDBSink | PostgresSink:
    if isinstance(dest, str):
        return PostgresSink(dest, table=table)
    return DuckDBSink(dest / "d.duckdb", table=table)


# -- the dialect-free model ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "column", "expected"),
    [
        ("INTEGER", "BIGINT", True),
        ("BIGINT", "INTEGER", False),
        ("INTEGER", "DOUBLE", True),
        ("BIGINT", "DOUBLE", False),  # rounds beyond 2^53
        ("SMALLINT", "FLOAT", True),
        ("INTEGER", "FLOAT", False),
        ("FLOAT", "DOUBLE", True),
        ("UINTEGER", "BIGINT", True),
        ("UINTEGER", "INTEGER", False),
        ("TINYINT", "UTINYINT", False),
        ("DECIMAL(10,2)", "DECIMAL(12,4)", True),
        ("DECIMAL(10,4)", "DECIMAL(12,2)", False),
        ("INTEGER", "DECIMAL(12,2)", True),
        ("BIGINT", "DECIMAL(18,0)", False),
        ("DECIMAL(12,2)", "DOUBLE", False),
        ("DATE", "TIMESTAMP", True),
        ("TIMESTAMP", "TIMESTAMP_NS", False),
        ("TIMESTAMP", "TIMESTAMPTZ", False),
        ("BIGINT", "VARCHAR", True),
        ("BLOB", "VARCHAR", False),
        ("VARCHAR", "BIGINT", False),
        ("NULL", "BIGINT", True),
    ],
)
def test_fits_is_the_lossless_lattice(value: str, column: str, expected: bool) -> None:
    """A type fits another only when every one of its values is exactly a value of the other."""
    assert fits(value, column) is expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("INTEGER", "BIGINT", "BIGINT"),
        ("INTEGER", "DOUBLE", "DOUBLE"),
        ("UINTEGER", "INTEGER", "BIGINT"),
        ("DECIMAL(10,2)", "DECIMAL(10,4)", "DECIMAL(12,4)"),
        ("INTEGER", "DECIMAL(5,2)", "DECIMAL(12,2)"),
        ("BIGINT", "DOUBLE", None),
        ("DECIMAL(12,2)", "DOUBLE", None),
        ("BIGINT", "VARCHAR", None),  # never widened to text
    ],
)
def test_common_is_the_narrowest_lossless_type_never_text(
    a: str, b: str, expected: str | None
) -> None:
    """Two types meet in the narrowest type both fit, or nowhere (never in VARCHAR)."""
    assert common(a, b) == expected


def test_each_policy_plans_the_same_diff_its_own_way() -> None:
    """Evolve adds and widens; freeze rejects and checks; discard_columns drops and widens."""
    table = (Column("id", "INTEGER"), Column("gone", "VARCHAR"), Column("amount", "BIGINT"))
    batch = (Column("id", "BIGINT"), Column("amount", "DOUBLE"), Column("new", "VARCHAR"))
    found = diff(table, batch)
    assert [c.name for c in found.added] == ["new"]
    assert [c.name for c in found.removed] == ["gone"]
    evolve, freeze, discard = (plan(found, p) for p in SCHEMA_POLICIES)
    assert [(c.column, c.after) for c in evolve.ddl] == [("new", "VARCHAR"), ("id", "BIGINT")]
    assert [c.column for c in evolve.check] == ["amount"]
    assert (freeze.ddl, freeze.reject, freeze.quarantine) == ((), ("new",), True)
    assert [(c.column, c.before, c.after) for c in freeze.check] == [
        ("id", "BIGINT", "INTEGER"), ("amount", "DOUBLE", "BIGINT")]
    assert [c.column for c in discard.ddl] == ["id"]
    assert discard.discard == ("new",)
    assert "removed" in {c.change for c in evolve.changes}


# -- evolve ----------------------------------------------------------------------------------------


def test_evolve_adds_a_new_column_and_keeps_the_old_rows(dest: Path | str) -> None:
    """A new column is added in the load's transaction; rows loaded before read NULL in it."""
    sink = _sink(dest)
    sink.write(_load("b1", [{"id": 1}]))
    sink.write(_load("b2", [{"id": 2, "region": "eu"}]))
    assert _types(sink) == {"id": "BIGINT", "region": "VARCHAR"}
    assert _query(sink, "SELECT * FROM t ORDER BY id") == [(1, None), (2, "eu")]


def test_a_column_the_batch_lacks_loads_as_null_under_every_policy(dest: Path | str) -> None:
    """A removed column is no error: its rows get NULL, the table keeps the column."""
    for policy in SCHEMA_POLICIES:
        sink = _sink(dest, table=policy)
        sink.write(_load(f"{policy}1", [{"id": 1, "note": "a"}], schema=policy))
        sink.write(_load(f"{policy}2", [{"id": 2}], schema=policy))
        assert _query(sink, f'SELECT * FROM "{policy}" ORDER BY id') == [(1, "a"), (2, None)]


def test_evolve_widens_int_to_bigint_and_int_to_double(dest: Path | str) -> None:
    """An INTEGER column grows to BIGINT for a big value and to DOUBLE for a fraction."""
    sink = _sink(dest)
    ints = pa.table({"a": pa.array([1], pa.int32()), "b": pa.array([1], pa.int32())})
    sink.write(_load("b1", ints))
    sink.write(_load("b2", pa.table({"a": [2**40], "b": [2.5]})))
    assert _types(sink) == {"a": "BIGINT", "b": "DOUBLE"}
    assert _query(sink, "SELECT * FROM t ORDER BY a") == [(1, 1.0), (2**40, 2.5)]


@pytest.mark.parametrize(
    ("table", "values", "kept", "refused"),
    [
        (pa.array([2**53 + 1], pa.int64()), [4.0, 3.7], [4, 2**53 + 1], ["3.7"]),
        (pa.array([Decimal("1.50")], pa.decimal128(12, 2)), [1.25, 1.234],
         [Decimal("1.25"), Decimal("1.50")], ["1.234"]),
        (pa.array([0.5], pa.float64()), [5, 2**53 + 1], [0.5, 5.0], [str(2**53 + 1)]),
        (pa.array([1], pa.int64()), ["12", "abc", "3.7"], [1, 12], ['"abc"', '"3.7"']),
    ],
    ids=["big bigint<-3.7", "decimal<-1.234", "double<-2^53+1", "bigint<-text"],
)
def test_evolve_never_rounds_a_value_into_a_narrower_column(
    dest: Path | str, table: pa.Array, values: list[Any], kept: list[Any], refused: list[str]
) -> None:
    """Values that would be rounded or cannot be read are dead letters; the column stays."""
    sink = _sink(dest)
    sink.write(_load("b1", pa.table({"v": table})))
    kind = _types(sink)["v"]
    sink.write(_load("b2", [{"v": v} for v in values]))
    assert _types(sink)["v"] == kind
    assert [r[0] for r in _query(sink, "SELECT v FROM t ORDER BY v")] == kept
    dead = _dead(sink)
    assert [(r[0], r[2], r[6]) for r in dead] == [("b2", "load", "json")] * len(refused)
    for row, value in zip(dead, refused, strict=True):
        assert f"column `v`: value {value} " in row[3]
        assert f"the {kind} column of table t" in row[3]
        assert json.loads(row[5]) == {"v": json.loads(value)}
        assert json.loads(row[4])[0]["column"] == "v"


def test_evolve_widens_integers_to_double_when_the_values_held_survive(dest: Path | str) -> None:
    """BIGINT meeting DOUBLE becomes DOUBLE if every value already in the column is exact."""
    sink = _sink(dest)
    sink.write(_load("b1", [{"v": 2**53}, {"v": None}]))
    sink.write(_load("b2", [{"v": 3.7}]))
    assert _types(sink) == {"v": "DOUBLE"}
    assert _query(sink, "SELECT v FROM t ORDER BY v") == [(3.7,), (2.0**53,), (None,)]
    assert [c.as_dict() for c in sink.schema_history()[1].changes] == [
        {"change": "widened", "column": "v", "from": "BIGINT", "to": "DOUBLE"}]


def test_an_all_null_column_waits_for_a_type(dest: Path | str) -> None:
    """A column with only nulls is not created as a NULL-typed column; values later add it."""
    sink = _sink(dest)
    sink.write(_load("b1", [{"id": 1, "later": None}]))
    assert _types(sink) == {"id": "BIGINT"}
    sink.write(_load("b2", [{"id": 2, "later": 7}]))
    assert _types(sink) == {"id": "BIGINT", "later": "BIGINT"}


# -- freeze ----------------------------------------------------------------------------------------


def test_freeze_sets_aside_rows_with_a_value_in_an_unknown_column(dest: Path | str) -> None:
    """Rows with a value in a column the table lacks are dead letters; the others load."""
    sink = _sink(dest)
    sink.write(_load("b1", [{"id": 1}], schema="freeze"))
    sink.write(_load("b2", [{"id": 2, "x": "v"}, {"id": 3, "x": None}], schema="freeze"))
    assert _types(sink) == {"id": "BIGINT"}
    assert _query(sink, "SELECT id FROM t ORDER BY id") == [(1,), (3,)]
    (dead,) = _dead(sink)
    assert dead[1:4] == (0, "load", "column `x` is not in table t (schema frozen)")
    assert json.loads(dead[5]) == {"id": 2, "x": "v"}
    assert [v.version for v in sink.schema_history()] == [1]


def test_freeze_loads_a_wider_type_whose_values_all_fit(dest: Path | str) -> None:
    """No DDL under freeze: BIGINT values that fit an INTEGER column load into it as they are."""
    sink = _sink(dest)
    sink.write(_load("b1", pa.table({"a": pa.array([1], pa.int32())}), schema="freeze"))
    sink.write(_load("b2", pa.table({"a": [2, 3]}), schema="freeze"))
    assert _types(sink) == {"a": "INTEGER"}
    assert _query(sink, "SELECT a FROM t ORDER BY a") == [(1,), (2,), (3,)]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (pa.table({"a": pa.array([1], pa.int32())}), pa.table({"a": [2, 2**40]})),
        (pa.table({"a": [1]}), pa.table({"a": [2.0, 3.7]})),
        (pa.table({"a": [1]}), pa.table({"a": ["2", "abc"]})),
    ],
    ids=["int<-2^40", "bigint<-3.7", "bigint<-text"],
)
def test_freeze_quarantines_a_batch_whose_values_do_not_fit(
    dest: Path | str, first: pa.Table, second: pa.Table
) -> None:
    """One value that does not fit sends the whole batch to the dead-letter store, nothing in."""
    sink = _sink(dest)
    sink.write(_load("b1", first, schema="freeze"))
    kinds = _types(sink)
    assert sink.write(_load("b2", second, schema="freeze"))
    assert _types(sink) == kinds
    assert _query(sink, "SELECT a FROM t") == [(1,)]
    dead = _dead(sink)
    assert [(r[1], r[2]) for r in dead] == [(0, "quarantine"), (1, "quarantine")]
    assert all("batch quarantined: table t's schema is frozen" in r[3] for r in dead)
    assert "this row: column `a`" in dead[1][3]
    assert sink.position("p") == {"at": "b2"}


# -- discard_columns -------------------------------------------------------------------------------


def test_discard_columns_drops_unknown_columns_and_widens_types(dest: Path | str) -> None:
    """Unknown columns vanish from the batch (no version); types are handled as under evolve."""
    sink = _sink(dest)
    sink.write(_load("b1", pa.table({"a": pa.array([1], pa.int32())}), schema="discard_columns"))
    batch = pa.table({"a": [2**60 + 1], "noise": ["z"]})
    sink.write(_load("b2", batch, schema="discard_columns"))
    sink.write(_load("b3", pa.table({"a": [3.7, 4.0]}), schema="discard_columns"))
    assert _types(sink) == {"a": "BIGINT"}
    assert _query(sink, "SELECT a FROM t ORDER BY a") == [(1,), (4,), (2**60 + 1,)]
    assert [(r[0], r[2]) for r in _dead(sink)] == [("b3", "load")]
    (_, v2) = sink.schema_history()
    assert [c.as_dict() for c in v2.changes] == [
        {"change": "widened", "column": "a", "from": "INTEGER", "to": "BIGINT"}]


# -- the transaction -------------------------------------------------------------------------------


def test_the_ddl_rolls_back_with_a_batch_that_fails_later(dest: Path | str) -> None:
    """A failure after the DDL leaves the schema, the history and the sink's cache as before."""
    sink = _sink(dest)
    sink.write(_load("b1", pa.table({"a": pa.array([1], pa.int32())})))
    batch = _load("b2", pa.table({"a": [2**40], "b": ["x"]}))

    def boom() -> None:
        raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        sink.write(batch, on_staged=boom)
    cached = sink._tables["t"].columns if isinstance(sink, PostgresSink) else sink._columns["t"]
    assert cached == (Column("a", "INTEGER"),)  # the cache never saw the DDL
    assert _query(sink, "SELECT count(*) FROM t") == [(1,)]
    assert [v.version for v in sink.schema_history()] == [1]
    assert _types(sink) == {"a": "INTEGER"}
    assert sink.write(batch)
    assert _types(sink) == {"a": "BIGINT", "b": "VARCHAR"}
    assert [v.version for v in sink.schema_history()] == [1, 2]


# -- history ---------------------------------------------------------------------------------------


def test_every_ddl_makes_a_version_with_its_diff(dest: Path | str) -> None:
    """Version 1 is the created table; each later DDL adds one, with columns in order."""
    sink = _sink(dest)
    sink.write(_load("b1", pa.table({"id": pa.array([1], pa.int32()), "v": ["a"]})))
    sink.write(_load("b2", [{"id": 2, "v": "b"}]))
    sink.write(_load("b3", [{"id": 3, "v": "c", "w": 1.5}]))
    sink.write(_load("b4", [{"id": 4}]))  # a removed column changes no table: no version
    versions = sink.schema_history()
    assert [(v.version, v.batch_id, v.pipeline, v.run_id) for v in versions] == [
        (1, "b1", "p", "r1"), (2, "b2", "p", "r1"), (3, "b3", "p", "r1")]
    assert versions[0].as_dict()["columns"] == {"id": "INTEGER", "v": "VARCHAR"}
    assert versions[2].as_dict()["columns"] == {"id": "BIGINT", "v": "VARCHAR", "w": "DOUBLE"}
    assert [c.as_dict() for c in versions[1].changes] == [
        {"change": "widened", "column": "id", "from": "INTEGER", "to": "BIGINT"}]
    assert [c.as_dict() for c in versions[2].changes] == [
        {"change": "added", "column": "w", "from": None, "to": "DOUBLE"}]


def test_a_replace_run_adds_no_version_when_the_columns_are_the_same(dest: Path | str) -> None:
    """Replace re-creates its staging table each run; the history is the table's, by its name."""
    sink = _sink(dest)
    for run in ("r1", "r2"):
        load = _load(f"{run}-b1", [{"id": 1}], mode="replace")
        sink.write(load)
        sink.finish("p", mode="replace")
    sink.write(_load("r3-b1", [{"id": 1, "v": "x"}], mode="replace"))
    sink.finish("p", mode="replace")
    versions = sink.schema_history()
    assert [(v.table, v.version) for v in versions] == [("t", 1), ("t", 2)]
    assert [c.as_dict()["change"] for c in versions[1].changes] == ["added"]


def _pipeline_file(tmp_path: Path) -> Path:
    drops = tmp_path / "drops"
    drops.mkdir()
    (drops / "a.csv").write_text("id,amount\n1,2\n2,3\n", encoding="utf-8")
    (drops / "b.csv").write_text("id,amount,region\n3,4.5,eu\n4,5,us\n", encoding="utf-8")
    (drops / "c.csv").write_text("id,amount\n5,n/a\n6,6\n", encoding="utf-8")
    spec = tmp_path / "orders.yaml"
    spec.write_text(
        "name: orders\nsource: {type: files, path: drops/*.csv}\n"
        "destination: {type: duckdb, path: wh.duckdb, table: orders}\n",
        encoding="utf-8",
    )
    return spec


def test_a_pipeline_run_evolves_the_table_and_reports_it(tmp_path: Path) -> None:
    """End to end over files: a column added, one widened, a text value set aside, events."""
    spec = _pipeline_file(tmp_path)
    sink = DuckDBSink(tmp_path / "wh.duckdb", table="orders")
    pipeline = Pipeline(
        name="orders", source=FileSource(str(tmp_path / "drops" / "*.csv")), destination=sink
    )
    with capture_events() as log:
        pipeline.run(hooks=[log], state=f"sqlite:///{tmp_path / 'state.db'}")
    assert _query(sink, "SELECT * FROM orders ORDER BY id") == [
        (1, 2.0, None), (2, 3.0, None), (3, 4.5, "eu"), (4, 5.0, "us"), (6, 6.0, None)]
    (dead,) = _dead(sink)
    assert 'value "n/a" (VARCHAR) does not fit the DOUBLE column of table orders' in dead[3]
    assert json.loads(dead[5]) == {"id": 5, "amount": "n/a"}
    changed = [e for e in log if isinstance(e, SchemaChanged)]
    assert [(e.table, e.version) for e in changed] == [("orders", 1), ("orders", 2), ("orders", 2)]
    assert changed[1].changes == (
        {"change": "added", "column": "region", "from": None, "to": "VARCHAR"},
        {"change": "widened", "column": "amount", "from": "BIGINT", "to": "DOUBLE"},
    )
    assert changed[2].changes == (
        {"change": "removed", "column": "region", "from": "VARCHAR", "to": None},
        {"change": "narrowed", "column": "amount", "from": "VARCHAR", "to": "DOUBLE"},
    )
    assert spec.exists()


def test_schema_history_cli_prints_diffs_and_json(tmp_path: Path) -> None:
    """`mendflow schema history` shows one block per version with +/~ lines, or JSON."""
    spec = _pipeline_file(tmp_path)
    sink = DuckDBSink(tmp_path / "wh.duckdb", table="orders")
    sink.write(_load("b1", pa.table({"id": pa.array([1], pa.int32()), "amount": [2]})))
    sink.write(_load("b2", pa.table({"id": [2**40], "amount": [3], "region": ["eu"]})))
    sink.close()
    text = CliRunner().invoke(schema, ["history", str(spec)])
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[0].startswith("orders v1 ")
    assert lines[1:3] == ["  + id INTEGER", "  + amount BIGINT"]
    assert lines[3].startswith("orders v2 ")
    assert lines[4:] == ["  + region VARCHAR", "  ~ id INTEGER → BIGINT"]
    out = CliRunner().invoke(schema, ["history", str(spec), "--json"])
    versions = json.loads(out.output)
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[1]["columns"] == {"id": "BIGINT", "amount": "BIGINT", "region": "VARCHAR"}


def test_schema_history_cli_on_a_pipeline_never_run(tmp_path: Path) -> None:
    """Before the first load there is no history, and no database file is created to say so."""
    spec = _pipeline_file(tmp_path)
    out = CliRunner().invoke(schema, ["history", str(spec)])
    assert out.exit_code == 0
    assert "no schema versions of orders yet" in out.output
    assert not (tmp_path / "wh.duckdb").exists()


# -- hostile identifiers ---------------------------------------------------------------------------


@pytest.mark.parametrize("policy", SCHEMA_POLICIES)
def test_hostile_column_names_are_only_names_under_every_policy(
    dest: Path | str, policy: SchemaPolicy
) -> None:
    """Quotes, spaces, keywords, dots, unicode: loaded as columns of that name, nothing else."""
    sink = _sink(dest, table="orders")
    bystander = _sink(dest, table="t")
    bystander.write(_load("keep", [{"id": 0}]))
    bystander.close()
    first = {"id": 1, **{name: f"v-{name}" for name in HOSTILE}}
    sink.write(_load("b1", [first], schema=policy))
    later = {"id": 2, **{f"{name} 2": 1.5 for name in HOSTILE}}
    sink.write(_load("b2", [later], schema=policy))
    tables = {r[0] for r in _query(sink, "SELECT table_name FROM information_schema.tables")}
    assert {"orders", "t", "_mendflow_dead_letters", "_mendflow_batches"} <= tables
    types = _types(sink, "orders")
    assert list(types)[:7] == ["id", *HOSTILE]
    evil = '"' + EVIL.replace('"', '""') + '"'
    assert _query(sink, f"SELECT {evil} FROM orders WHERE id = 1") == [(f"v-{EVIL}",)]
    added = [f"{name} 2" for name in HOSTILE]
    if policy == "evolve":
        assert list(types)[7:] == added
    else:
        assert list(types) == ["id", *HOSTILE]
    dead = _dead(sink)
    assert len(dead) == (1 if policy == "freeze" else 0)
    assert _query(sink, "SELECT count(*) FROM orders") == [(1 if policy == "freeze" else 2,)]
    assert _query(sink, "SELECT * FROM t") == [(0,)]


def test_a_hostile_type_break_is_reported_verbatim_and_changes_nothing(dest: Path | str) -> None:
    """A value that does not fit a hostile column is a dead letter naming the column exactly."""
    sink = _sink(dest, table="orders")
    sink.write(_load("b1", [{EVIL: 1}]))
    sink.write(_load("b2", [{EVIL: "'); DROP TABLE orders; --"}]))
    (dead,) = _dead(sink)
    assert f"column `{EVIL}`: value \"'); DROP TABLE orders; --\"" in dead[3]
    assert _query(sink, "SELECT count(*) FROM orders") == [(1,)]


def test_a_frozen_quarantine_is_a_batch_quarantined_event(
    tmp_path: Path, dest: Path | str
) -> None:
    """Inside a run, a quarantined batch is reported so the healing ledger records it."""
    sink = _sink(dest)
    source = MemorySource([[{"a": 1}], [{"a": 2.5}]])
    pipeline = Pipeline(name="p", source=source, destination=sink, schema="freeze")
    with capture_events() as log:
        result = pipeline.run(hooks=[log], state=f"sqlite:///{tmp_path / 'state.db'}")
    (event,) = [e for e in log if isinstance(e, BatchQuarantined)]
    assert (event.batch_id, event.rows, event.error_type) == ("memory#1", 1, "SchemaMismatch")
    assert "schema is frozen" in event.reason
    assert result.batches == 2
    assert _query(sink, "SELECT a FROM t") == [(1,)]
