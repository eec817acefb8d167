"""Merge orders into PostgreSQL with mendflow, beside a plain COPY into an empty table.

Every tool loads the same deterministic 1M orders (id BIGINT, updated_at TIMESTAMPTZ, amount
DOUBLE PRECISION, qty INTEGER, note TEXT with 30 % NULLs, ids unique) into an empty database of
its own, created before and dropped after each run, in its own fresh Python process:

- ``mendflow-sink``: ``PostgresSink.write`` of ``Load``s of --batch-rows rows, merge on the
  primary key id, into a table the sink creates, then ``finish`` as a run ends, from an Arrow
  table already in memory. No batch's ids are in the table yet, so each is COPYed straight in
  (binary) with the batch row and checkpoint, and ``finish`` builds the primary key once
  (``sinks/_pg_keys``);
- ``mendflow-upsert``: the same Loads again into a table that already holds every id (loaded
  before the clock starts): every row an update, through the temporary stage and ``INSERT ...
  ON CONFLICT DO UPDATE`` (the first load takes the direct path: no key of a batch is in the
  table yet, so its rows are COPYed straight in);
- ``mendflow-pipeline``: the whole ``Pipeline`` (``FileSource`` over the JSON-lines file,
  parsing, typing under the declared columns, merge into ``PostgresSink``);
- ``copy-binary``: one plain ``COPY ... FROM STDIN (FORMAT BINARY)`` into an empty table without
  any index or key, the bytes made by mendflow's encoder (``sinks/_pg_copy``), one transaction;
- ``copy-csv``: the same with CSV text written by ``pyarrow.csv``;
- ``dlt``: dlt's postgres destination, merge on id from the Arrow table (skipped when dlt or
  its psycopg2 driver is not installed).

The clock of each child runs from just before it connects until its last COMMIT returned; the
Arrow tools read the parquet copy of the data before it starts, the pipeline reads the JSON
lines inside it. After the clock, each child checks what landed (rows, distinct ids, NULL notes,
sums), so a tool that loaded less shows it.

    python bench/bench_pg.py --rows 1000000 --repeat 3 --write BENCHMARKS.md

Run it with the project's environment (``.venv/bin/python``); mendflow is imported from ``src/``
of this checkout, and the reporting helpers from ``bench/bench_load.py``. The PostgreSQL server
is --pg-url (default ``$MENDFLOW_TEST_PG_URL``); its user must be allowed to create databases.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent / "src"))

import bench_load as shared  # noqa: E402  the house helpers: RSS, CPU, machine, versions

DEFAULT_WORKDIR = Path("/tmp/mendflow-bench-pg")
RESULT_TAG = shared.RESULT_TAG
MARK_START = "<!-- bench_pg:start -->"
MARK_END = "<!-- bench_pg:end -->"
TOOLS = ("mendflow-sink", "mendflow-pipeline", "mendflow-upsert", "copy-binary", "copy-csv",
         "dlt")
MENDFLOW = ("mendflow-sink", "mendflow-pipeline", "mendflow-upsert")
COPIES = ("copy-binary", "copy-csv")
DDL = ("CREATE TABLE orders (id BIGINT, updated_at TIMESTAMPTZ, amount DOUBLE PRECISION, "
       "qty INTEGER, note TEXT)")
#: The types the pipeline declares for the JSON-lines file (the same table as COPY's).
DECLARED = {"id": "bigint", "updated_at": "timestamptz", "amount": "double", "qty": "int32",
            "note": "string"}
COPY_CHUNK_ROWS = 65_536


# --------------------------------------------------------------------------------------------
# Data


def orders(rows: int, *, seed: int = 7) -> Any:
    """The orders as an Arrow table: ids 1..rows, the rest seeded random (as gen_orders)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(seed)
    start = np.datetime64("2024-01-01T00:00:00", "us").astype(np.int64)
    stamps = start + rng.integers(0, 365 * 86_400_000_000, rows)
    pick = pa.array(rng.integers(0, 12, rows)).cast(pa.string())
    note = pc.binary_join_element_wise("gift wrap #", pick, "")
    return pa.table({
        "id": pa.array(np.arange(1, rows + 1, dtype=np.int64)),
        "updated_at": pa.array(stamps, pa.timestamp("us", "UTC")),
        "amount": pa.array(np.round(rng.uniform(1, 5000, rows), 2)),
        "qty": pa.array(rng.integers(1, 50, rows).astype(np.int32)),
        "note": pc.if_else(pa.array(rng.random(rows) < 0.3), pa.nulls(rows, pa.string()), note),
    })


def data_paths(workdir: Path, rows: int) -> tuple[Path, Path]:
    """The parquet and JSON-lines files of ``rows`` orders."""
    return workdir / f"orders_{rows}.parquet", workdir / f"orders_{rows}.jsonl"


def prepare(rows: int, workdir: Path) -> None:
    """Write both files of ``rows`` orders unless they are cached."""
    import polars as pl
    import pyarrow.parquet as pq

    parquet, jsonl = data_paths(workdir, rows)
    if parquet.exists() and jsonl.exists():
        return
    workdir.mkdir(parents=True, exist_ok=True)
    table = orders(rows)
    parts = [path.with_name(path.name + ".partial") for path in (parquet, jsonl)]
    pq.write_table(table, parts[0])
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    frame.write_ndjson(parts[1])
    parts[0].rename(parquet)
    parts[1].rename(jsonl)


# --------------------------------------------------------------------------------------------
# The tools. Each load_* runs inside the child's clock.


@dataclass(frozen=True)
class Job:
    """What one child loads, into which database."""

    tool: str
    rows: int
    url: str
    parquet: Path
    jsonl: Path
    batch_rows: int
    workdir: Path


def load_sink(job: Job, table: Any, *, prefix: str = "b") -> dict[str, Any]:
    """PostgresSink.write, merge on id, one Load per --batch-rows rows."""
    from mendflow.batch import Load
    from mendflow.sinks.postgres import PostgresSink

    sink = PostgresSink(job.url, table="orders")
    try:
        for i, start in enumerate(range(0, table.num_rows, job.batch_rows)):
            batch = table.slice(start, job.batch_rows)
            sink.write(Load(pipeline="orders", run_id="bench", batch_id=f"{prefix}{i}", data=batch,
                            position={"row": start + batch.num_rows}, mode="merge",
                            primary_key=("id",), records=batch.num_rows))
        sink.finish("orders", mode="merge")  # as a run ends: builds a first load's primary key
    finally:
        sink.close()
    return {}


def load_upsert(job: Job, table: Any) -> dict[str, Any]:
    """The same merge again over a table that already holds every id (loaded before the clock
    starts, see ``child``): every row an update, through the stage and ON CONFLICT DO UPDATE."""
    return load_sink(job, table, prefix="u")


def load_pipeline(job: Job, _table: Any) -> dict[str, Any]:
    """The full pipeline: JSON lines read, typed and merged on id."""
    from mendflow import FileSource, Pipeline
    from mendflow.sinks.postgres import PostgresSink

    pipeline = Pipeline(name="orders", source=FileSource(job.jsonl, batch_size=job.batch_rows),
                        destination=PostgresSink(job.url, table="orders"),
                        write_mode="merge", primary_key=["id"], columns=DECLARED)
    result = pipeline.run()
    return {"rows_loaded": int(result.rows_loaded), "dead_letters": int(result.dead_letters)}


def copy_into(job: Job, chunks: Iterator[bytes], fmt: str) -> dict[str, Any]:
    """CREATE TABLE, one COPY of ``chunks`` in format ``fmt``, COMMIT."""
    import psycopg

    with psycopg.connect(job.url) as con, con.cursor() as cur:
        cur.execute(DDL)
        with cur.copy(f"COPY orders FROM STDIN (FORMAT {fmt})") as copy:
            for chunk in chunks:
                copy.write(chunk)
    return {}


def load_copy_binary(job: Job, table: Any) -> dict[str, Any]:
    """Plain binary COPY, bytes by mendflow's encoder, into a table with no index."""
    from mendflow.sinks._pg_copy import encode

    return copy_into(job, encode(table, chunk_rows=COPY_CHUNK_ROWS), "BINARY")


def csv_chunks(table: Any) -> Iterator[bytes]:
    """``table`` as CSV text, a chunk at a time (NULL: an empty unquoted field)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    options = pcsv.WriteOptions(include_header=False)
    for batch in table.to_batches(COPY_CHUNK_ROWS):
        out = pa.BufferOutputStream()
        pcsv.write_csv(batch, out, options)
        yield out.getvalue().to_pybytes()


def load_copy_csv(job: Job, table: Any) -> dict[str, Any]:
    """Plain CSV COPY, text by pyarrow.csv, into a table with no index."""
    return copy_into(job, csv_chunks(table), "CSV")


def load_dlt(job: Job, table: Any) -> dict[str, Any]:
    """dlt's postgres destination, merge on id, the Arrow table in --batch-rows slices."""
    import dlt

    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    pipeline = dlt.pipeline(
        pipeline_name="orders_bench", pipelines_dir=str(job.workdir / "dlt"),
        destination=dlt.destinations.postgres(_dlt_url(job.url)), dataset_name="public")
    slices = [table.slice(s, job.batch_rows) for s in range(0, table.num_rows, job.batch_rows)]
    pipeline.run(dlt.resource(slices, name="orders", write_disposition="merge",
                              primary_key="id"))
    return {"steps": shared.step_seconds(pipeline.last_trace)}


def _dlt_url(conninfo: str) -> str:
    """A libpq connection string as the postgresql:// URL dlt takes (dlt insists on a
    password: a server that trusts the user gets a placeholder it ignores)."""
    from psycopg.conninfo import conninfo_to_dict

    p = conninfo_to_dict(conninfo)
    auth = f"{p.get('user', 'postgres')}:{p.get('password') or 'unused'}"
    host = f"{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}"
    return f"postgresql://{auth}@{host}/{p['dbname']}"


LOADERS: dict[str, Callable[[Job, Any], dict[str, Any]]] = {
    "mendflow-sink": load_sink,
    "mendflow-upsert": load_upsert,
    "mendflow-pipeline": load_pipeline,
    "copy-binary": load_copy_binary,
    "copy-csv": load_copy_csv,
    "dlt": load_dlt,
}


def check(url: str, schema: str) -> dict[str, Any]:
    """What landed in ``schema.orders``: rows, distinct ids, NULL notes, sums, the time range."""
    import psycopg
    from psycopg import sql

    query = sql.SQL(
        "SELECT count(*), count(DISTINCT id), count(*) - count(note), sum(qty), "
        "sum(amount::numeric)::text, min(updated_at)::text, max(updated_at)::text "
        "FROM {}").format(sql.Identifier(schema, "orders"))
    with psycopg.connect(url) as con:
        row = con.execute(query).fetchone()
    assert row is not None
    keys = ("rows", "ids", "null_notes", "qty_sum", "amount_sum", "first", "last")
    return dict(zip(keys, row, strict=True))


# --------------------------------------------------------------------------------------------
# The child process


def child(args: argparse.Namespace) -> None:
    """Load the cached orders with ``args.child`` into database ``args.pg_url``; print one line."""
    parquet, jsonl = data_paths(args.workdir, args.rows)
    job = Job(args.child, args.rows, args.pg_url, parquet, jsonl, args.batch_rows, args.workdir)
    import psycopg  # noqa: F401  imported before the clock, as the loaders' own imports below
    import pyarrow.parquet as pq

    import mendflow.sinks.postgres  # noqa: F401
    if job.tool == "dlt":
        import dlt  # noqa: F401
    table = None if job.tool == "mendflow-pipeline" else pq.read_table(parquet)
    if job.tool == "mendflow-upsert":
        load_sink(job, table)  # every id in the table before the clock starts
    started, cpu = time.perf_counter(), shared.cpu_seconds()
    facts = LOADERS[job.tool](job, table)
    seconds, cpu = time.perf_counter() - started, shared.cpu_seconds() - cpu
    out = {"tool": job.tool, "rows": job.rows, "seconds": seconds, "cpu_seconds": cpu,
           "maxrss_kib": shared.peak_rss_kib(), **facts}
    out["table"] = check(job.url, "public")
    print(RESULT_TAG + json.dumps(out, default=str), flush=True)


# --------------------------------------------------------------------------------------------
# The parent: databases, runs, table, BENCHMARKS.md


def admin(url: str) -> Any:
    """An autocommit connection to the server of ``url``."""
    import psycopg

    return psycopg.connect(url, autocommit=True)


def with_database(url: str, name: str) -> str:
    """``url`` (a URI or key=value string) pointing at database ``name``, as key=value."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    params["dbname"] = name
    return make_conninfo("", **params)


def fresh_database(url: str) -> str:
    """Create an empty database for one run; flush the server's dirty pages first (best effort,
    so one run's writes are not paid by the next)."""
    from psycopg import sql

    name = f"mf_bench_{uuid.uuid4().hex[:10]}"
    with admin(url) as con:
        con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        with contextlib.suppress(Exception):  # not allowed for this user: runs still compare
            con.execute("CHECKPOINT")
    return name


def drop_database(url: str, name: str) -> None:
    from psycopg import sql

    with admin(url) as con:
        con.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def run_script(flags: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Run this script with ``flags`` in a fresh interpreter; return its result line or error."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *flags, "--rows", str(args.rows),
           "--workdir", str(args.workdir), "--batch-rows", str(args.batch_rows)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            result: dict[str, Any] = json.loads(line[len(RESULT_TAG):])
            return result
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {proc.returncode}: {tail}"}


def run_tool(tool: str, args: argparse.Namespace) -> dict[str, Any]:
    """One run of ``tool`` in a database of its own, dropped after."""
    name = fresh_database(args.pg_url)
    try:
        result = run_script(["--child", tool, "--pg-url", with_database(args.pg_url, name)], args)
    finally:
        drop_database(args.pg_url, name)
    return {"tool": tool, "rows": args.rows, **result}


def missing(tool: str) -> str:
    """Why ``tool`` cannot run here ("" when it can)."""
    import importlib.util

    if tool != "dlt":
        return ""
    absent = [m for m in ("dlt", "psycopg2") if importlib.util.find_spec(m) is None]
    return f"skipped: {', '.join(absent)} not installed" if absent else ""


def best_of(tool: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``tool`` --repeat times and keep the fastest run."""
    why = missing(tool)
    if why:
        return {"tool": tool, "rows": args.rows, "error": why}
    runs = [run_tool(tool, args) for _ in range(args.repeat)]
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    best = min(ok, key=lambda r: float(r["seconds"]))
    best["repeats"] = len(ok)
    best["all_seconds"] = [round(float(r["seconds"]), 3) for r in ok]
    best["median_seconds"] = statistics.median(float(r["seconds"]) for r in ok)
    return best


def rate(result: dict[str, Any]) -> float:
    return float(result["rows"]) / float(result["seconds"])


def median_rate(result: dict[str, Any]) -> float:
    """Rows/s of the median run (the best run's when there was one run)."""
    return float(result["rows"]) / float(result.get("median_seconds", result["seconds"]))


def limit(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The fastest plain COPY: the limit mendflow is measured against."""
    copies = [r for r in results if r["tool"] in COPIES and "error" not in r]
    return max(copies, key=rate) if copies else None


def table_row(result: dict[str, Any], best: dict[str, Any] | None) -> str:
    head = f"| {result['tool']} |"
    if "error" in result:
        return head + " | | | | | | | " + str(result["error"]).replace("|", "\\|") + " |"
    vs = f"{rate(result) / rate(best):.2f}x" if best else "n/a"
    landed = result["table"]
    median = float(result.get("median_seconds", result["seconds"]))
    return (f"{head} {int(landed['rows']):,} | {result['seconds']:.2f} | {median:.2f} | "
            f"{result['cpu_seconds']:.2f} | {rate(result):,.0f} | {vs} | "
            f"{result['maxrss_kib'] / 1024:,.0f} | {', '.join(map(str, result['all_seconds']))} |")


def table(results: list[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    best = limit(results)
    head = ("| tool | rows in table | seconds (best) | median s | client CPU s | rows/s | rows/s "
            "vs fastest plain COPY | peak RSS (MiB) | seconds of each run |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---|")
    return "\n".join([head, *(table_row(r, best) for r in results)])


def verdict(results: list[dict[str, Any]]) -> str:
    """Each mendflow tool's rows/s against each plain COPY's, and whether the tables agree."""
    best = limit(results)
    copies = [r for r in results if r["tool"] in COPIES and "error" not in r]
    lines = []
    if best is not None:
        lines.append(f"Fastest plain COPY: {best['tool']} ({rate(best):,.0f} rows/s).\n")
        for r in results:
            if r["tool"] in MENDFLOW and "error" not in r:
                ratios = ", ".join(f"{rate(r) / rate(c):.2f}x {c['tool']}" for c in copies)
                medians = median_rate(r) / median_rate(best)
                met = "met" if rate(r) >= 0.5 * rate(best) else "missed"
                lines.append(f"- {r['tool']}: {ratios} (target >= 0.5x the fastest: {met}; "
                             f"median against median: {medians:.2f}x)")
    facts = {json.dumps(r["table"], sort_keys=True) for r in results if "error" not in r}
    lines.append("\nEvery table holds the same rows (count, distinct ids, NULL notes, sums, time "
                 "range)." if len(facts) == 1 else f"\nTables differ: {sorted(facts)}")
    return "\n".join(lines)


def server(url: str) -> str:
    """The PostgreSQL server's version and the settings that weigh on load speed."""
    import psycopg

    names = ("server_version", "shared_buffers", "synchronous_commit", "fsync", "wal_level",
             "max_wal_size", "full_page_writes")
    with admin(url) as con:
        shown = {n: con.execute(f"SHOW {n}").fetchone() for n in names}
    settings = ", ".join(f"{n} {v[0] if v else '?'}" for n, v in shown.items() if n != names[0])
    version = shown[names[0]]
    return (f"- PostgreSQL {version[0] if version else '?'} on the same machine (TCP to "
            f"127.0.0.1); psycopg {psycopg.__version__}\n- Server settings: {settings}")


def report(results: list[dict[str, Any]], argv: Sequence[str],
           load: tuple[float, float, float], args: argparse.Namespace) -> str:
    """The generated section of BENCHMARKS.md."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    flags = [a for a in argv if not a.startswith("--pg-url")]
    steps = shared.step_notes(results)
    return (f"{MARK_START}\n_Generated by `bench/bench_pg.py` on {when}._\n\n"
            f"Reproduce:\n\n```\npython bench/bench_pg.py {' '.join(flags)}\n```\n\n"
            f"Machine:\n\n{shared.machine(load)}\n{server(args.pg_url)}\n\n"
            f"{table(results)}\n\n{verdict(results)}\n\n{steps}\n{MARK_END}")


def write_report(path: Path, section: str) -> None:
    """Replace the generated section of ``path``, or add a PostgreSQL section at its end."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if MARK_START in text and MARK_END in text:
        before, rest = text.split(MARK_START, 1)
        text = before + section + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## PostgreSQL: merge vs plain COPY\n\n" + section + "\n"
    path.write_text(text)


# --------------------------------------------------------------------------------------------
# Command line


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="keep the best of K runs per tool")
    parser.add_argument("--pg-url", default=os.environ.get("MENDFLOW_TEST_PG_URL", ""),
                        help="server to run on (default $MENDFLOW_TEST_PG_URL)")
    parser.add_argument("--batch-rows", type=int, default=100_000, metavar="N",
                        help="rows per Load (mendflow-sink, dlt) or per read (pipeline)")
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--write", type=Path, metavar="BENCHMARKS.md")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child run")
    parser.add_argument("--child", choices=TOOLS, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    args.workdir = args.workdir.resolve()
    if args.child:
        child(args)
        return
    if args.prepare:
        prepare(args.rows, args.workdir)
        print(RESULT_TAG + "{}", flush=True)
        return
    if not args.pg_url:
        raise SystemExit("no server: pass --pg-url or set MENDFLOW_TEST_PG_URL")
    load = os.getloadavg()
    print(f"preparing {args.rows:,} orders in {args.workdir} ...", flush=True)
    prepared = run_script(["--prepare"], args)
    if "error" in prepared:
        raise SystemExit(f"could not prepare the data: {prepared['error']}")
    results = []
    for tool in args.tools:
        print(f"running {tool} ...", flush=True)
        results.append(best_of(tool, args))
        print("  " + shared.summary_line(results[-1]) if "error" not in results[-1]
              else f"  {tool}: {results[-1]['error']}", flush=True)
    print("\n" + table(results) + "\n\n" + verdict(results))
    (args.workdir / "last_results.json").write_text(json.dumps(results, indent=1, default=str))
    if args.write:
        write_report(args.write, report(results, argv, load, args))
        print(f"\nwrote {args.write}")


if __name__ == "__main__":
    main()
