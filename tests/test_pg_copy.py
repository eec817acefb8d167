"""The binary COPY encoder, checked against a real PostgreSQL: what goes in comes back out."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from mendflow.exceptions import SchemaMismatch
from mendflow.sinks._pg_copy import encode, pg_type, stream, wire_type

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1)


def load(url: str, table: pa.Table, *, chunk_rows: int = 65_536) -> list[tuple[Any, ...]]:
    """COPY ``table`` into a staging table of wire types, read it back cast to the pg types."""
    names = [sql.Identifier(f"c{i}") for i in range(table.num_columns)]
    pairs = list(zip(names, table.schema, strict=True))
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(n, sql.SQL(wire_type(f.type))) for n, f in pairs)
    select = sql.SQL(", ").join(
        sql.SQL("{}::{}").format(n, sql.SQL(pg_type(f.type))) for n, f in pairs)
    with psycopg.connect(url) as con, con.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        cur.execute(sql.SQL("CREATE TEMP TABLE stage (__n BIGSERIAL, {})").format(columns))
        copy_sql = sql.SQL("COPY stage ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.SQL(", ").join(names))
        with cur.copy(copy_sql) as copy:
            for chunk in encode(table, chunk_rows=chunk_rows):
                copy.write(chunk)
        # binary results: a REAL comes back as its exact float32, not its shortest decimal text
        cur.execute(sql.SQL("SELECT {} FROM stage ORDER BY __n").format(select), binary=True)
        return cur.fetchall()


def expected(table: pa.Table) -> list[tuple[Any, ...]]:
    """What PostgreSQL should give back for ``table``, row by row."""
    columns = [[_expect(column.type, v) for v in column.to_pylist()] for column in table.columns]
    return list(zip(*columns, strict=True))


def _expect(t: pa.DataType, value: Any) -> Any:
    if value is None:
        return None
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_map(t):
        return {str(k): v for k, v in value}
    if pa.types.is_timestamp(t) and t.unit == "ns":
        value = value.to_pydatetime() if hasattr(value, "to_pydatetime") else value
    if pa.types.is_duration(t) and hasattr(value, "to_pytimedelta"):
        value = value.to_pytimedelta()
    if pa.types.is_uint64(t):
        return decimal.Decimal(value)
    return value


def same(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> bool:
    """Row lists equal, where NaN equals NaN."""
    def norm(v: Any) -> Any:
        return "NaN" if isinstance(v, float) and math.isnan(v) else v

    return [tuple(map(norm, r)) for r in got] == [tuple(map(norm, r)) for r in want]


def every_type() -> pa.Table:
    """One column per supported type, 6 rows each, with nulls, extremes and oddities."""
    i64 = pa.int64()
    ts = [dt.datetime(1900, 1, 1, 0, 0, 0, 1), None, dt.datetime(2000, 1, 1),
          dt.datetime(1999, 12, 31, 23, 59, 59, 999999), dt.datetime(9999, 12, 31, 23, 59, 59),
          dt.datetime(1, 1, 1)]
    return pa.table({
        "i8": pa.array([-128, 127, None, 0, 1, -1], pa.int8()),
        "i16": pa.array([-2**15, 2**15 - 1, None, 0, 1, -1], pa.int16()),
        "i32": pa.array([-2**31, 2**31 - 1, None, 0, 1, -1], pa.int32()),
        "i64": pa.array([-2**63, 2**63 - 1, None, 0, 1, -1], i64),
        "u8": pa.array([0, 255, None, 1, 2, 3], pa.uint8()),
        "u16": pa.array([0, 2**16 - 1, None, 1, 2, 3], pa.uint16()),
        "u32": pa.array([0, 2**32 - 1, None, 1, 2, 3], pa.uint32()),
        "u64": pa.array([0, 2**64 - 1, None, 1, 2, 3], pa.uint64()),
        "f32": pa.array([1.5, float("nan"), None, float("inf"), float("-inf"), -0.0], pa.float32()),
        "f64": pa.array([1e308, float("nan"), None, float("inf"), 5e-324, -2.5], pa.float64()),
        "b": pa.array([True, False, None, True, False, True]),
        "s": pa.array(["", "héllo wörld", None, "日本語 🎉", "a" * 1000, "x'\"\\\t\n"]),
        "ls": pa.array(["", "b", None, "ü", "tab\t", "z"], pa.large_string()),
        "sv": pa.array(["short", "a much longer string over twelve", None, "", "é", "q"],
                       pa.string_view()),
        "bin": pa.array([b"", b"\x00\xff", None, b"abc", b"\x00", b"\xfe" * 300]),
        "lbin": pa.array([b"x", b"", None, b"\x01\x02", b"", b"y"], pa.large_binary()),
        "fsb": pa.array([b"ab", b"\x00\x00", None, b"zz", b"12", b"\xff\xff"], pa.binary(2)),
        "d32": pa.array([dt.date(1, 1, 1), dt.date(9999, 12, 31), None, dt.date(2000, 1, 1),
                         dt.date(1999, 12, 31), dt.date(1970, 1, 1)], pa.date32()),
        "d64": pa.array([dt.date(1960, 5, 5), None, dt.date(2030, 1, 2), dt.date(2000, 1, 1),
                         dt.date(1999, 12, 31), dt.date(1970, 1, 1)], pa.date64()),
        "ts_s": pa.array([t and t.replace(microsecond=0) for t in ts], pa.timestamp("s")),
        "ts_ms": pa.array([t and t.replace(microsecond=t.microsecond // 1000 * 1000) for t in ts],
                          pa.timestamp("ms")),
        "ts_us": pa.array(ts, pa.timestamp("us")),
        "tstz": pa.array([t and t.replace(tzinfo=UTC) for t in ts], pa.timestamp("us", "UTC")),
        "tstz_ber": pa.array([*ts[:4], dt.datetime(2024, 6, 1), None], pa.timestamp("us"))
        .cast(pa.timestamp("us", "Europe/Berlin")),
        "t64": pa.array([dt.time(0, 0), dt.time(23, 59, 59, 999999), None, dt.time(12, 0, 0, 1),
                         dt.time(1, 2, 3), dt.time(0, 0, 0, 1)], pa.time64("us")),
        "t32": pa.array([dt.time(0, 0), dt.time(23, 59, 59), None, dt.time(12, 0, 1),
                         dt.time(1, 2, 3), dt.time(0, 0, 0)], pa.time32("s")),
        "dur": pa.array([dt.timedelta(0), dt.timedelta(days=-3, microseconds=5), None,
                         dt.timedelta(hours=30), dt.timedelta(seconds=1), dt.timedelta(weeks=99)],
                        pa.duration("us")),
        "dec": pa.array([decimal.Decimal("0.00"), decimal.Decimal("-12345.67"), None,
                         decimal.Decimal("99999.99"), decimal.Decimal("0.01"),
                         decimal.Decimal("-0.01")], pa.decimal128(7, 2)),
        "dec256": pa.array([decimal.Decimal("1" * 40), None, decimal.Decimal("-1.5"),
                            decimal.Decimal(0), decimal.Decimal("3.0"), decimal.Decimal("2")],
                           pa.decimal256(50, 1)),
        "dict": pa.array(["a", "b", None, "a", "ü", "a"]).dictionary_encode(),
        "idict": pa.array([1, None, 3, 1, 1, 2]).dictionary_encode(),
        "null": pa.nulls(6),
        "st": pa.array([{"x": 1, "y": "a"}, None, {"x": None, "y": "é\"q"}, {"x": 2, "y": ""},
                        {"x": -1, "y": None}, {"x": 0, "y": "z"}]),
        "lst": pa.array([[1, 2], [], None, [None], [3], [4, 5, 6]]),
        "map": pa.array([[("k", 1)], [], None, [("a", 2), ("b", None)], [("x", 0)], [("é", 9)]],
                        pa.map_(pa.string(), pa.int64())),
    })


def test_every_type_round_trips(pg_url: str) -> None:
    """Every supported Arrow type, with NULLs and extremes, comes back from PostgreSQL equal."""
    table = every_type()
    assert same(load(pg_url, table), expected(table))


@pytest.mark.parametrize("chunk_rows", [1, 2, 4, 5])
def test_small_chunks_give_the_same_rows(pg_url: str, chunk_rows: int) -> None:
    """Cutting the rows into many chunks, even of one row, changes nothing."""
    table = every_type()
    assert same(load(pg_url, table, chunk_rows=chunk_rows), expected(table))


def test_slices_and_chunked_arrays(pg_url: str) -> None:
    """A sliced table (Arrow offsets) and columns of several chunks encode their own rows."""
    table = every_type()
    sliced = table.slice(2, 3)
    chunked = pa.concat_tables([table.slice(0, 1), table.slice(1, 4), table.slice(5)])
    assert chunked.column(0).num_chunks == 3
    assert same(load(pg_url, sliced), expected(sliced))
    assert same(load(pg_url, chunked, chunk_rows=3), expected(chunked))


def test_zero_rows(pg_url: str) -> None:
    """A table without rows is a header and a trailer, and loads nothing."""
    table = every_type().slice(0, 0)
    assert b"".join(encode(table)) == b"PGCOPY\n\xff\r\n\x00" + bytes(8) + b"\xff\xff"
    assert load(pg_url, table) == []


def test_only_fixed_width_columns(pg_url: str) -> None:
    """Without any variable-width field, a chunk is one byte matrix: rows still come back."""
    table = pa.table({"a": pa.array(range(10), pa.int64()),
                      "b": pa.array([float(i) / 3 for i in range(10)])})
    assert same(load(pg_url, table, chunk_rows=4), expected(table))


def test_nanoseconds_round_toward_the_floor(pg_url: str) -> None:
    """Nanosecond timestamps lose their sub-microsecond digits toward the past."""
    table = pa.table({"t": pa.array([-1, 1_999, 999, -1_001], pa.timestamp("ns")),
                      "d": pa.array([-1, 1_999, None, 5], pa.duration("ns")),
                      "tm": pa.array([1_999, 0, None, 86_399_999_999_999], pa.time64("ns"))})
    rows = load(pg_url, table)
    us = dt.timedelta(microseconds=1)
    assert [r[0] for r in rows] == [EPOCH - us, EPOCH + us, EPOCH, EPOCH - 2 * us]
    assert [r[1] for r in rows] == [-us, us, None, dt.timedelta(0)]
    assert [r[2] for r in rows] == [dt.time(0, 0, 0, 1), dt.time(0), None,
                                   dt.time(23, 59, 59, 999999)]


def test_far_dates_and_timestamps(pg_url: str) -> None:
    """Dates and timestamps beyond Python's years 1-9999 arrive as PostgreSQL's own values."""
    year_s = 365 * 86_400
    table = pa.table({
        "d": pa.array([-1_000_000, 1_000_000_000, None], pa.date32()),
        "t": pa.array([-5_000 * year_s, 200_000 * year_s, None], pa.timestamp("s")),
    })
    with psycopg.connect(pg_url) as con:
        con.execute("CREATE TEMP TABLE stage (d DATE, t TIMESTAMP)")
        with con.cursor().copy("COPY stage (d, t) FROM STDIN (FORMAT BINARY)") as copy:
            for chunk in encode(table):
                copy.write(chunk)
        got = con.execute("SELECT d::text, t::text FROM stage").fetchall()
        want = con.execute(
            "SELECT (DATE '1970-01-01' + d)::text, (TIMESTAMP '1970-01-01' + make_interval("
            "secs => s))::text FROM (VALUES (-1000000, %s::float8), (1000000000, %s::float8), "
            "(NULL, NULL)) AS v(d, s)", (-5_000 * year_s, 200_000 * year_s)).fetchall()
    assert got == want


def test_stream_sends_what_encode_makes() -> None:
    """The stream, encoded one chunk ahead in a worker thread, is encode's bytes in order."""
    table = pa.concat_tables([every_type()] * 40)
    assert b"".join(stream(table, chunk_rows=7)) == b"".join(encode(table))
    assert b"".join(stream(table.slice(0, 3), chunk_rows=7)) == b"".join(encode(table.slice(0, 3)))


def test_stream_raises_an_encoding_error_in_the_callers_thread() -> None:
    """A value the encoder refuses in the worker thread is raised where the stream is read."""
    table = pa.table({"t": pa.array([0] * 10 + [2**62], pa.timestamp("s"))})
    with pytest.raises(SchemaMismatch, match="outside PostgreSQL's range"):
        b"".join(stream(table, chunk_rows=4))


def test_out_of_range_values_are_refused() -> None:
    """A timestamp beyond int64 microseconds or before 4714 BC is refused, not wrapped around."""
    for table in (pa.table({"t": pa.array([2**62], pa.timestamp("s"))}),
                  pa.table({"t": pa.array([-2**63 + 5], pa.timestamp("us"))})):
        with pytest.raises(SchemaMismatch, match="outside PostgreSQL's range"):
            b"".join(encode(table))
    bitmap = pa.array([False, True]).buffers()[1]
    hidden = pa.Array.from_buffers(  # the huge value sits under a NULL: not refused
        pa.timestamp("s"), 2, [bitmap, pa.array([2**62, 0], pa.int64()).buffers()[1]])
    assert hidden.to_pylist() == [None, EPOCH]
    assert b"".join(encode(pa.table({"t": hidden})))


def test_unsupported_type_is_refused() -> None:
    """An Arrow type without a PostgreSQL encoding is refused with what to do."""
    table = pa.table({"i": pa.array([(1, 2, 3)], pa.month_day_nano_interval())})
    with pytest.raises(SchemaMismatch, match="cast the column"):
        next(encode(table))


def test_type_names() -> None:
    """Staging and destination types: widened integers, text for NUMERIC and JSONB."""
    assert wire_type(pa.int8()) == "SMALLINT"
    assert wire_type(pa.uint64()) == "TEXT"
    assert pg_type(pa.uint64()) == "NUMERIC(20,0)"
    assert pg_type(pa.decimal128(12, 3)) == "NUMERIC(12,3)"
    assert wire_type(pa.list_(pa.int64())) == "TEXT"
    assert pg_type(pa.struct([])) == "JSONB"
    assert pg_type(pa.timestamp("ns", "UTC")) == "TIMESTAMPTZ"
    assert pg_type(pa.dictionary(pa.int32(), pa.string())) == "TEXT"


def test_many_columns(pg_url: str) -> None:
    """1,599 columns (with the row number, PostgreSQL's limit of 1,600) load in one COPY."""
    table = pa.table({
        f"c{i}": pa.array([i, None, -i], pa.int16()) if i % 2 else pa.array(["a", None, str(i)])
        for i in range(1599)})
    assert same(load(pg_url, table, chunk_rows=2), expected(table))


_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
_KINDS: dict[str, tuple[pa.DataType, st.SearchStrategy[Any]]] = {
    "int16": (pa.int16(), st.integers(-(2**15), 2**15 - 1)),
    "int32": (pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    "int64": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "float32": (pa.float32(), st.floats(width=32)),
    "float64": (pa.float64(), st.floats()),
    "bool": (pa.bool_(), st.booleans()),
    "string": (pa.string(), _TEXT),
    "large_string": (pa.large_string(), _TEXT),
    "binary": (pa.binary(), st.binary()),
    "null": (pa.null(), st.none()),
}


@st.composite
def tables(draw: st.DrawFn) -> tuple[pa.Table, int]:
    """A random table (sliced or in several chunks) and a chunk size to encode it with."""
    rows = draw(st.integers(0, 25))
    kinds = draw(st.lists(st.sampled_from(sorted(_KINDS)), min_size=1, max_size=6))
    columns = {}
    for i, kind in enumerate(kinds):
        arrow_type, values = _KINDS[kind]
        column = draw(st.lists(st.none() | values, min_size=rows + 2, max_size=rows + 2))
        columns[f"c{i}"] = pa.array(column, arrow_type)
    table = pa.table(columns).slice(draw(st.integers(0, 2)), rows)
    cut = draw(st.integers(0, rows))
    table = pa.concat_tables([table.slice(0, cut), table.slice(cut)])
    return table, draw(st.integers(1, 30))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=tables())
def test_random_tables_round_trip(pg_url: str, case: tuple[pa.Table, int]) -> None:
    """Property: any table of ints, floats, bools, strings, bytes and NULLs, however sliced,
    chunked and cut, comes back from PostgreSQL as it went in."""
    table, chunk_rows = case
    assert same(load(pg_url, table, chunk_rows=chunk_rows), expected(table))
