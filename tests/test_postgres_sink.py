"""The PostgreSQL destination on a real server: exactly-once loads, modes, types, settings."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from mendflow import config
from mendflow.batch import Load
from mendflow.cli import main
from mendflow.exceptions import BadData, ConfigError, DestinationUnavailable
from mendflow.pipeline import Pipeline
from mendflow.sinks.postgres import PostgresSink
from mendflow.sources.files import FileSource
from tests.conftest import write_orders, write_pipeline


def _load(batch_id: str, data: pa.Table | list[dict[str, Any]], **kw: Any) -> Load:
    table = data if isinstance(data, pa.Table) else pa.Table.from_pylist(data)
    return Load(pipeline="p", run_id="r1", batch_id=batch_id, data=table,
                position={"at": batch_id}, **kw)


def _rows(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as con:
        return [tuple(r) for r in con.execute(query, params).fetchall()]


def test_a_batch_written_twice_is_loaded_once_with_its_checkpoint(pg_url: str) -> None:
    """The second write of a batch id is skipped; the position moves with the data."""
    sink = PostgresSink(pg_url, table="t")
    assert sink.position("p") == {}
    done = sink.write(_load("b1", [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]))
    assert done is not None
    assert (done.rows, done.dead_letters) == (2, 0)
    assert sink.write(_load("b1", [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}])) is None
    assert sink.position("p") == {"at": "b1"}
    assert _rows(pg_url, "SELECT id, v FROM t ORDER BY id") == [(1, "a"), (2, "b")]
    assert _rows(pg_url, "SELECT pipeline, batch_id, rows FROM _mendflow_batches") == [
        ("p", "b1", 2)]
    sink.close()


def test_merge_replaces_rows_by_key_and_the_table_gets_the_key(pg_url: str) -> None:
    """Merge upserts on the primary key, which the sink declares when it creates the table."""
    sink = PostgresSink(pg_url, table="t")
    sink.write(_load("b1", [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}], mode="merge",
                     primary_key=("id",)))
    sink.write(_load("b2", [{"id": 2, "v": "B"}, {"id": 3, "v": "c"}], mode="merge",
                     primary_key=("id",)))
    assert _rows(pg_url, "SELECT id, v FROM t ORDER BY id") == [(1, "a"), (2, "B"), (3, "c")]
    assert _rows(pg_url, "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON "
                 "a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                 "WHERE i.indrelid = 't'::regclass AND i.indisprimary") == [("id",)]
    sink.close()


def test_merge_into_a_table_without_a_unique_key_deletes_then_inserts(pg_url: str) -> None:
    """A table made elsewhere, with no unique index on the key, still merges exactly."""
    with psycopg.connect(pg_url) as con:
        con.execute("CREATE TABLE t (id BIGINT, v TEXT)")
        con.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    sink = PostgresSink(pg_url, table="t")
    sink.write(_load("b1", [{"id": 2, "v": "B"}, {"id": 3, "v": "c"}], mode="merge",
                     primary_key=("id",)))
    assert _rows(pg_url, "SELECT id, v FROM t ORDER BY id") == [(1, "a"), (2, "B"), (3, "c")]
    sink.close()


def test_replace_publishes_the_run_whole_at_finish(pg_url: str) -> None:
    """Until finish, readers see the old table; then the new one, in one step."""
    sink = PostgresSink(pg_url, table="t")
    sink.write(_load("r1", [{"id": 1}], mode="replace"))
    sink.finish("p", mode="replace")
    sink.write(_load("r2a", [{"id": 10}], mode="replace"))
    sink.write(_load("r2b", [{"id": 11}], mode="replace"))
    assert _rows(pg_url, "SELECT id FROM t") == [(1,)]
    assert sink.position("p", mode="replace") == {"at": "r2b"}
    sink.finish("p", mode="replace")
    assert _rows(pg_url, "SELECT id FROM t ORDER BY id") == [(10,), (11,)]
    assert sink.position("p") == {"at": "r2b"}
    sink.close()


def test_types_arrive_exactly(pg_url: str) -> None:
    """Integers, doubles, decimals, text, booleans, dates, timestamps, bytes and nested values."""
    at = dt.datetime(1999, 12, 31, 23, 59, 59, 123456, tzinfo=dt.UTC)
    data = pa.table({
        "n": [0, 1, 2],
        "i": pa.array([-(2**63), 2**63 - 1, None], pa.int64()),
        "s": pa.array([1, None, -2], pa.int16()),
        "f": pa.array([1.5, float("inf"), None]),
        "d": pa.array([Decimal("12.34"), None, Decimal("-0.01")], pa.decimal128(12, 2)),
        "t": pa.array(["ünï", "", None]),
        "b": pa.array([True, False, None]),
        "day": pa.array([dt.date(1970, 1, 1), dt.date(2100, 2, 28), None]),
        "ts": pa.array([at, None, at], pa.timestamp("us", tz="UTC")),
        "raw": pa.array([b"\x00\xff", None, b""]),
        "nested": pa.array([{"k": [1, 2]}, None, {"k": []}]),
    })
    sink = PostgresSink(pg_url, table="t")
    sink.write(_load("b1", data))
    got = _rows(pg_url, "SELECT i, s, f, d, t, b, day, ts, raw, nested FROM t ORDER BY n")
    assert got[0] == (-(2**63), 1, 1.5, Decimal("12.34"), "ünï", True, dt.date(1970, 1, 1), at,
                      b"\x00\xff", {"k": [1, 2]})
    assert got[1][:4] == (2**63 - 1, None, float("inf"), None)
    assert got[1][4:] == ("", False, dt.date(2100, 2, 28), None, None, None)
    assert got[2] == (None, -2, None, Decimal("-0.01"), None, None, None, at, b"", {"k": []})
    types = dict(_rows(pg_url, "SELECT column_name, data_type FROM information_schema.columns "
                       "WHERE table_name = 't'"))
    assert types["d"] == "numeric"
    assert types["ts"] == "timestamp with time zone"
    assert types["nested"] == "jsonb"
    assert types["s"] == "smallint"
    sink.close()


def test_a_schema_other_than_public_holds_the_table_and_the_bookkeeping(pg_url: str) -> None:
    """``schema=`` places everything there, created when missing; the name is quoted."""
    sink = PostgresSink(pg_url, table="orders", schema="raw data")
    sink.write(_load("b1", [{"id": 1}]))
    tables = {r[0] for r in _rows(pg_url, "SELECT table_name FROM information_schema.tables "
                                   "WHERE table_schema = 'raw data'")}
    assert {"orders", "_mendflow_batches", "_mendflow_checkpoints",
            "_mendflow_dead_letters"} <= tables
    sink.close()


def test_a_pipeline_loads_files_once_and_a_rerun_loads_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    """End to end over JSON lines, merge mode, then a rerun from the checkpoint."""
    drops = tmp_path / "drops"
    drops.mkdir()
    write_orders(drops / "a.jsonl", start=1, count=3000, seed=1, bad_every=1000)
    write_orders(drops / "b.jsonl", start=0, count=1000, seed=2, repeat_from=10)
    sink = PostgresSink(pg_url, table="orders")
    pipeline = Pipeline(
        name="orders", source=FileSource(str(drops / "*.jsonl"), batch_size=700),
        destination=sink, write_mode="merge", primary_key=("id",),
        columns={"amount": "double", "updated_at": "timestamptz"},
    )
    state = f"sqlite:///{tmp_path / 'state.db'}"
    first = pipeline.run(state=state)
    assert first.rows_loaded + first.dead_letters == 4000
    assert first.dead_letters == 3
    again = pipeline.run(state=state)
    assert again.rows_loaded == 0
    # ids 1..3000 less the three bad amounts (1000, 2000, 3000); b.jsonl updates ids 10..1009,
    # and brings id 1000 back with a good amount
    assert _rows(pg_url, "SELECT count(*) FROM orders") == [(2998,)]
    assert _rows(pg_url, "SELECT count(*) FROM _mendflow_dead_letters") == [(3,)]
    sink.close()


def test_the_password_never_shows(pg_url: str) -> None:
    """Not in the sink's name or repr, nor in the error of a failed connection."""
    url = "postgresql://loader:hunter2-secret@127.0.0.1:1/nowhere"
    sink = PostgresSink(url, table="t", connect_timeout_s=1)
    assert "hunter2" not in sink.name
    assert "hunter2" not in repr(sink)
    with pytest.raises(DestinationUnavailable) as caught:
        sink.position("p")
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in caught.value.dependency
    assert "127.0.0.1" in str(caught.value)


def test_yaml_urls_name_environment_variables(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``url: ${VAR}`` reads the environment; an unset variable is a clear user error."""
    monkeypatch.setenv("WAREHOUSE_URL", pg_url)
    (tmp_path / "a.jsonl").write_text(json.dumps({"id": 1}) + "\n", encoding="utf-8")
    spec = write_pipeline(
        tmp_path / "p.yaml", name="p", source={"type": "files", "path": "*.jsonl"},
        destination={"type": "postgres", "url": "${WAREHOUSE_URL}", "table": "t",
                     "schema": "staging"},
    )
    loaded = config.load(spec)
    assert isinstance(loaded.pipeline.destination, PostgresSink)
    assert loaded.pipeline.destination.schema == "staging"
    monkeypatch.delenv("WAREHOUSE_URL")
    with pytest.raises(ConfigError, match=r"WAREHOUSE_URL\}, which is not set"):
        config.load(spec)
    out = CliRunner().invoke(main, ["run", str(spec)])
    assert out.exit_code == 2
    assert "Traceback" not in out.output


def test_schema_history_and_dead_letters_from_the_cli(pg_url: str, tmp_path: Path) -> None:
    """`mendflow schema history` and `mendflow dlq list` read a PostgreSQL destination."""
    (tmp_path / "a.jsonl").write_text('{"id": 1}\n{"id": "x"}\n', encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"id": 2, "region": "eu"}\n', encoding="utf-8")
    spec = write_pipeline(
        tmp_path / "p.yaml", name="p", source={"type": "files", "path": "*.jsonl"},
        destination={"type": "postgres", "url": pg_url, "table": "t"},
        columns={"id": "bigint"}, state=f"sqlite:///{tmp_path / 'state.db'}",
    )
    ran = CliRunner().invoke(main, ["run", str(spec)])
    assert ran.exit_code == 0, ran.output
    out = CliRunner().invoke(main, ["schema", "history", str(spec), "--json"])
    assert out.exit_code == 0, out.output
    versions = json.loads(out.output)
    assert [v["columns"] for v in versions] == [
        {"id": "BIGINT"}, {"id": "BIGINT", "region": "VARCHAR"}]
    dead = CliRunner().invoke(main, ["dlq", "list", str(spec), "--json"])
    assert dead.exit_code == 0, dead.output
    [letter] = json.loads(dead.output)
    assert letter["stage"] in ("coerce", "validate")


def test_a_loader_with_table_privileges_only_loads_once_the_tables_exist(pg_url: str) -> None:
    """No CREATE on the database or schema: once an owner made the tables, the loader writes."""
    owner = PostgresSink(pg_url, table="t")
    owner.write(_load("b1", [{"id": 1}]))
    owner.close()
    role = f"loader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        con.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)))
        con.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "
                            "public TO {}").format(sql.Identifier(role)))
        con.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(
            sql.Identifier(role)))
    try:
        loader = PostgresSink(with_user(pg_url, role), table="t")
        assert loader.write(_load("b2", [{"id": 2}])) is not None
        assert loader.position("p") == {"at": "b2"}
        loader.close()
        assert _rows(pg_url, "SELECT id FROM t ORDER BY id") == [(1,), (2,)]
    finally:
        with psycopg.connect(pg_url, autocommit=True) as con:
            con.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            con.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def with_user(url: str, user: str) -> str:
    """``url`` connecting as ``user``."""
    params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    return make_conninfo("", **{**params, "user": user})


@pytest.mark.parametrize("key", ["id", "code"], ids=["number key", "text key"])
def test_merge_is_exact_whether_the_batch_goes_straight_in_or_through_the_stage(
    pg_url: str, key: str
) -> None:
    """Batches whose key range misses the table's keys are COPYed straight in; the others
    upsert through the stage: the rows are the same as a merge row by row."""
    sink = PostgresSink(pg_url, table="t")
    expected: dict[int, str] = {}
    batches = [[1, 10], [5], [2, 11], [20, 30], [30, 3]]  # a gap, overlaps, growing keys
    for number, ids in enumerate(batches):
        rows = [{"id": i, "code": f"k{i:03d}", "v": f"b{number}"} for i in ids]
        sink.write(_load(f"b{number}", rows, mode="merge", primary_key=(key,)))
        expected |= dict.fromkeys(ids, f"b{number}")
    got = _rows(pg_url, "SELECT id, v FROM t ORDER BY id")
    assert got == sorted(expected.items())
    sink.close()


def test_a_first_merge_load_builds_the_key_once_at_the_end(pg_url: str) -> None:
    """Batches with growing keys go straight in with no key yet; finish builds it once."""
    sink = PostgresSink(pg_url, table="t")
    for number in range(3):
        rows = [{"id": number * 10 + i, "v": "x"} for i in range(10)]
        sink.write(_load(f"b{number}", rows, mode="merge", primary_key=("id",)))
    key = ("SELECT count(*) FROM pg_index WHERE indrelid = 't'::regclass AND indisprimary")
    assert _rows(pg_url, key) == [(0,)]
    assert _rows(pg_url, "SELECT lo, hi FROM _mendflow_pending_keys") == [("0", "29")]
    sink.finish("p", mode="merge")
    assert _rows(pg_url, key) == [(1,)]
    assert _rows(pg_url, "SELECT count(*) FROM _mendflow_pending_keys") == [(0,)]
    sink.write(_load("b3", [{"id": 5, "v": "y"}], mode="merge", primary_key=("id",)))
    assert _rows(pg_url, "SELECT count(*), count(DISTINCT id) FROM t") == [(30, 30)]
    sink.close()


def test_a_null_key_while_the_key_waits_fails_the_batch_as_bad_data(pg_url: str) -> None:
    """The key is built before a batch with a NULL key, which then fails whole, nothing in."""
    sink = PostgresSink(pg_url, table="t")
    sink.write(_load("b1", [{"id": 1, "v": "a"}], mode="merge", primary_key=("id",)))
    with pytest.raises(BadData):
        sink.write(_load("b2", [{"id": None, "v": "b"}, {"id": 7, "v": "c"}], mode="merge",
                         primary_key=("id",)))
    assert _rows(pg_url, "SELECT id FROM t") == [(1,)]
    assert sink.position("p") == {"at": "b1"}
    sink.close()


PLAIN_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(),
               pa.uint32(), pa.uint64(), pa.float32(), pa.float64(), pa.bool_(), pa.string(),
               pa.large_string(), pa.binary(), pa.large_binary(), pa.date32(), pa.null(),
               *(pa.timestamp(u) for u in ("s", "ms", "us", "ns")),
               *(pa.timestamp(u, "UTC") for u in ("s", "ms", "us"))]


def test_plain_arrow_types_are_named_as_duckdb_names_them() -> None:
    """The sink names a batch's plain Arrow types without DuckDB, exactly as its DESCRIBE does."""
    import duckdb

    from mendflow.sinks._pg_schema import _ALIASES, described

    batch = pa.table({f"c{i}": pa.nulls(1, t) for i, t in enumerate(PLAIN_TYPES)})
    with duckdb.connect() as con:
        con.register("b", batch)
        want = [(str(n), _ALIASES.get(str(t), str(t)))
                for n, t, *_ in con.execute("DESCRIBE SELECT * FROM b").fetchall()]
    got = described(batch.schema)
    assert got is not None
    assert [(c.name, c.type) for c in got] == want
    assert described(pa.schema([("d", pa.decimal128(10, 2))])) is None  # DuckDB is asked


def test_a_batch_of_plain_types_opens_no_duckdb(pg_url: str) -> None:
    """Creating the table and meeting it again need no in-memory DuckDB; text into a typed
    column, whose values must be checked, does."""
    sink = PostgresSink(pg_url, table="t")
    sink.write(_load("b1", [{"id": 1, "v": "a"}], mode="merge", primary_key=("id",)))
    sink.write(_load("b2", [{"id": 2, "v": "b"}], mode="merge", primary_key=("id",)))
    assert sink._duck is None
    sink.write(_load("b3", [{"id": "3", "v": "c"}], mode="merge", primary_key=("id",)))
    assert sink._duck is not None
    assert _rows(pg_url, "SELECT id, v FROM t ORDER BY id") == [(1, "a"), (2, "b"), (3, "c")]
    sink.close()
