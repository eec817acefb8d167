"""Load the same orders JSON-lines file with mendflow, dlt and DuckDB, side by side.

Each tool runs in its own fresh Python process, so the peak RSS reported is that tool's alone.
Each child times its load from just before it opens the destination until the destination is
closed (the data is durable), excluding interpreter start and imports (reported separately),
and reports what happened to the ~0.5 % malformed values of the file.

    python bench/bench_load.py --rows 1000000 --also-rows 5000000 --write BENCHMARKS.md
    python bench/bench_load.py --rows 1000000 --tools mendflow duckdb-read_json --repeat 3

Tools: mendflow (merge on id, bad values dead-lettered), dlt-parquet (merge, Python dicts from the
file, dlt's fastest setting: parquet loader files), dlt-arrow (merge, Arrow tables that DuckDB
parsed and typed with ignore_errors, parquet loader files: dlt given our reader), dlt-default
(merge, Python dicts, dlt's default file format; its row count is set by --dlt-default-rows
because it is slow), duckdb-read_json (CREATE TABLE AS SELECT from
read_json with ignore_errors: the speed limit of the engine underneath). --also-rows runs only
mendflow and duckdb-read_json, to show whether peak memory grows with the row count. Generated
files are cached in --workdir (default /tmp/mendflow-bench) and made again only when missing.

Run it with the project's environment (``.venv/bin/python``, with the ``bench`` extra installed);
mendflow is imported from ``src/`` of this checkout. A child is run as
``python bench/bench_load.py --child TOOL --rows N --workdir DIR``; it prints one line
``BENCH_RESULT {json}``. The raw results of the last run go to ``WORKDIR/last_results.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
SRC = ROOT / "src"
DEFAULT_WORKDIR = Path("/tmp/mendflow-bench")
RESULT_TAG = "BENCH_RESULT "
MARK_START = "<!-- bench_load:start -->"
MARK_END = "<!-- bench_load:end -->"

TOOLS = ("mendflow", "dlt-parquet", "dlt-arrow", "dlt-default", "duckdb-read_json")
#: Tools that also run at --also-rows: the ones whose memory should stay flat with row count.
SCALING_TOOLS = ("mendflow", "duckdb-read_json")
#: Modules each child imports before its clock starts.
IMPORTS = {
    "mendflow": ("duckdb", "pyarrow", "mendflow"),
    "dlt-parquet": ("duckdb", "pyarrow", "dlt"),
    "dlt-arrow": ("duckdb", "pyarrow", "dlt"),
    "dlt-default": ("duckdb", "dlt"),
    "duckdb-read_json": ("duckdb",),
}
#: The declared types of the columns that carry malformed values.
TYPED = {"amount": "double", "qty": "bigint", "updated_at": "timestamptz"}
#: The full schema of an order, as DuckDB types.
SCHEMA = {
    "id": "BIGINT",
    "updated_at": "TIMESTAMPTZ",
    "customer": "VARCHAR",
    "amount": "DOUBLE",
    "qty": "BIGINT",
    "region": "VARCHAR",
    "note": "VARCHAR",
}
ARROW_BATCH_ROWS = 250_000
DICT_CHUNK_ROWS = 10_000


# --------------------------------------------------------------------------------------------
# Shared helpers


def struct_literal(types: dict[str, str]) -> str:
    """Render ``types`` as the DuckDB struct literal read_json's ``columns`` takes."""
    return "{" + ", ".join(f"{name}: '{kind}'" for name, kind in types.items()) + "}"


def read_json_sql(*, raw: bool) -> str:
    """SELECT over the file bound as ``$path``: typed with ignore_errors, or every value as text."""
    if raw:
        types = {name: ("BIGINT" if name == "id" else "VARCHAR") for name in SCHEMA}
        return (
            "SELECT * FROM read_json($path, format = 'newline_delimited', "
            f"columns = {struct_literal(types)})"
        )
    return (
        "SELECT * FROM read_json($path, format = 'newline_delimited', "
        f"columns = {struct_literal(SCHEMA)}, ignore_errors = true)"
    )


def data_path(workdir: Path, rows: int) -> Path:
    """Where the generated file of ``rows`` orders is cached."""
    return workdir / f"orders_{rows}.jsonl"


def peak_rss_kib() -> int:
    """Peak resident set of this process image (and of any child it waited for), in KiB.

    On Linux this is VmHWM, the high-water mark of the memory map made at exec. ``ru_maxrss``
    is only the fallback: Linux carries it over fork and exec, so a child's value is never below
    its parent's resident size at the time of the fork.
    """
    status = Path("/proc/self/status")
    lines = status.read_text().splitlines() if status.exists() else []
    hwm = [int(line.split()[1]) for line in lines if line.startswith("VmHWM:")]
    own = hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def cpu_seconds() -> float:
    """User plus system CPU time of this process (all its threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fetch_ints(con: Any, sql: str, params: dict[str, str] | None = None) -> list[int]:
    """The one row ``sql`` returns, as integers."""
    row: tuple[Any, ...] | None = con.execute(sql, params or {}).fetchone()
    if row is None:
        raise RuntimeError(f"no row from: {sql}")
    return [int(v) for v in row]


def null_counts(con: Any, table: str, columns: Sequence[str]) -> dict[str, int]:
    """The rows in ``table`` and how many NULLs each of ``columns`` holds."""
    parts = ", ".join(f'count(*) - count("{c}")' for c in columns)
    row = fetch_ints(con, f"SELECT count(*), {parts} FROM {table}")
    return {"rows": row[0], **dict(zip(columns, row[1:], strict=True))}


# --------------------------------------------------------------------------------------------
# The tools. Each load_* runs inside the child's clock; each check_* runs after it stopped.


@dataclass(frozen=True)
class Job:
    """What one child loads, and where its destination lives."""

    tool: str
    path: Path
    rows: int
    dest: Path

    @property
    def db(self) -> Path:
        return self.dest / "orders.duckdb"


def load_mendflow(job: Job) -> dict[str, Any]:
    """Merge on id into a DuckDB file; values failing the declared types are dead-lettered."""
    from mendflow import DuckDBSink, FileSource, Pipeline

    pipeline = Pipeline(
        name="orders",
        source=FileSource(job.path),
        destination=DuckDBSink(job.db, table="orders"),
        write_mode="merge",
        primary_key=["id"],
        columns=TYPED,
    )
    result = pipeline.run()
    return {
        "rows_read": int(result.rows_read),
        "rows_loaded": int(result.rows_loaded),
        "dead_letters_reported": int(result.dead_letters),
    }


def check_mendflow(job: Job) -> dict[str, Any]:
    """Rows, NULLs and dead letters as they stand in the DuckDB file."""
    import duckdb

    with duckdb.connect(str(job.db), read_only=True) as con:
        facts: dict[str, Any] = {"table": null_counts(con, "orders", list(TYPED))}
        facts["dead_letters"] = fetch_ints(con, "SELECT count(*) FROM _mendflow_dead_letters")[0]
    return facts


def arrow_tables(path: Path) -> Iterator[Any]:
    """Stream the file as Arrow tables, typed by DuckDB (malformed values become NULL)."""
    import duckdb
    import pyarrow as pa

    with duckdb.connect() as con:
        relation = con.sql(read_json_sql(raw=False), params={"path": str(path)})
        for batch in relation.to_arrow_reader(ARROW_BATCH_ROWS):
            yield pa.Table.from_batches([batch])


def dict_chunks(path: Path) -> Iterator[list[dict[str, Any]]]:
    """Stream the file as lists of Python dicts, one json.loads per line."""
    chunk: list[dict[str, Any]] = []
    with path.open("rb") as lines:
        for line in lines:
            chunk.append(json.loads(line))
            if len(chunk) == DICT_CHUNK_ROWS:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def run_dlt(job: Job, items: Iterator[Any], *, parquet: bool) -> dict[str, Any]:
    """Run a dlt merge of ``items`` into the job's DuckDB file."""
    import dlt

    pipeline = dlt.pipeline(
        pipeline_name="orders_bench",
        pipelines_dir=str(job.dest / "pipelines"),
        destination=dlt.destinations.duckdb(str(job.db)),
        dataset_name="bench",
    )
    resource_ = dlt.resource(items, name="orders", write_disposition="merge", primary_key="id")
    if parquet:
        pipeline.run(resource_, loader_file_format="parquet")
    else:
        pipeline.run(resource_)
    return {"steps": step_seconds(pipeline.last_trace)}


def step_seconds(trace: Any) -> dict[str, float]:
    """Seconds dlt spent in each step (extract, normalize, load) of its last run."""
    steps = trace.steps if trace is not None else []
    return {
        str(s.step): (s.finished_at - s.started_at).total_seconds()
        for s in steps
        if s.started_at and s.finished_at and s.step != "run"
    }


def load_dlt_parquet(job: Job) -> dict[str, Any]:
    """dlt merge from Python dicts read from the file, written as parquet loader files."""
    return run_dlt(job, dict_chunks(job.path), parquet=True)


def load_dlt_arrow(job: Job) -> dict[str, Any]:
    """dlt merge from Arrow tables typed by DuckDB, written as parquet loader files."""
    return run_dlt(job, arrow_tables(job.path), parquet=True)


def load_dlt_default(job: Job) -> dict[str, Any]:
    """dlt merge from Python dicts, with dlt's default loader file format."""
    return run_dlt(job, dict_chunks(job.path), parquet=False)


def check_dlt(job: Job) -> dict[str, Any]:
    """The columns dlt created (variant columns included), their NULLs and non-NULLs."""
    import duckdb

    with duckdb.connect(str(job.db), read_only=True) as con:
        rows = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'bench' AND table_name = 'orders' ORDER BY ordinal_position"
        ).fetchall()
        columns = {str(name): str(kind) for name, kind in rows}
        variants = [c for c in columns if "__v_" in c]
        facts: dict[str, Any] = {
            "columns": columns,
            "table": null_counts(con, "bench.orders", list(TYPED)),
        }
        facts["variants"] = {
            c: fetch_ints(con, f'SELECT count("{c}") FROM bench.orders')[0] for c in variants
        }
    return facts


def load_duckdb(job: Job) -> dict[str, Any]:
    """CREATE TABLE AS SELECT from read_json with the full schema and ignore_errors."""
    import duckdb

    con = duckdb.connect(str(job.db))
    try:
        con.execute("CREATE TABLE orders AS " + read_json_sql(raw=False), {"path": str(job.path)})
    finally:
        con.close()
    return {}


def check_duckdb(job: Job) -> dict[str, Any]:
    """Rows and NULLs as they stand in the DuckDB file."""
    import duckdb

    with duckdb.connect(str(job.db), read_only=True) as con:
        return {"table": null_counts(con, "orders", list(TYPED))}


LOADERS: dict[str, Callable[[Job], dict[str, Any]]] = {
    "mendflow": load_mendflow,
    "dlt-parquet": load_dlt_parquet,
    "dlt-arrow": load_dlt_arrow,
    "dlt-default": load_dlt_default,
    "duckdb-read_json": load_duckdb,
}
CHECKS: dict[str, Callable[[Job], dict[str, Any]]] = {
    "mendflow": check_mendflow,
    "dlt-parquet": check_dlt,
    "dlt-arrow": check_dlt,
    "dlt-default": check_dlt,
    "duckdb-read_json": check_duckdb,
}


# --------------------------------------------------------------------------------------------
# The child process


def fresh_dest(workdir: Path, tool: str) -> Path:
    """An empty folder for the tool's destination and any state it keeps."""
    dest = workdir / "dest" / tool
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    return dest


def child(tool: str, rows: int, workdir: Path) -> None:
    """Load the cached file of ``rows`` orders with ``tool``; print one result line."""
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    sys.path.insert(0, str(SRC))
    job = Job(tool, data_path(workdir, rows), rows, fresh_dest(workdir, tool))
    os.chdir(job.dest)
    started = time.perf_counter()
    for module in IMPORTS[tool]:
        importlib.import_module(module)
    imported, cpu = time.perf_counter(), cpu_seconds()
    facts = LOADERS[tool](job)
    seconds, cpu = time.perf_counter() - imported, cpu_seconds() - cpu
    rss, ru_maxrss = peak_rss_kib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    facts.update(CHECKS[tool](job))
    out = {"tool": tool, "rows": rows, "seconds": seconds, "import_seconds": imported - started}
    out.update(
        cpu_seconds=cpu,
        maxrss_kib=rss,
        ru_maxrss_kib=ru_maxrss,
    )
    out.update(facts)
    print(RESULT_TAG + json.dumps(out), flush=True)


def prepare(rows: int, workdir: Path) -> None:
    """Make sure the file of ``rows`` orders exists; print its malformed values per column."""
    path = ensure_data(workdir, rows)
    print(RESULT_TAG + json.dumps({"malformed": malformed_in(path)}), flush=True)


# --------------------------------------------------------------------------------------------
# The parent: data, runs, table, BENCHMARKS.md


def ensure_data(workdir: Path, rows: int) -> Path:
    """Generate the orders file of ``rows`` rows unless it is already cached."""
    path = data_path(workdir, rows)
    if not path.exists():
        sys.path.insert(0, str(BENCH_DIR))
        import gen_orders

        workdir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        gen_orders.write(partial, rows)
        partial.rename(path)
    return path


def malformed_in(path: Path) -> dict[str, int]:
    """Count, per typed column, the values present in the file that fail the declared type."""
    import duckdb

    parts = ", ".join(
        f"count({c}) FILTER (WHERE TRY_CAST({c} AS {SCHEMA[c]}) IS NULL)" for c in TYPED
    )
    with duckdb.connect() as con:
        sql = f"SELECT {parts} FROM ({read_json_sql(raw=True)})"
        row = fetch_ints(con, sql, {"path": str(path)})
    return {c: int(n) for c, n in zip(TYPED, row, strict=True)}


def run_script(flags: list[str], rows: int, workdir: Path, timeout: float) -> dict[str, Any]:
    """Run this script with ``flags`` in a fresh interpreter; return its result line or error."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *flags]
    cmd += ["--rows", str(rows), "--workdir", str(workdir)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            result: dict[str, Any] = json.loads(line[len(RESULT_TAG) :])
            return result
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {proc.returncode}: {tail}"}


def run_child(tool: str, rows: int, workdir: Path, timeout: float) -> dict[str, Any]:
    """Run one tool in a fresh interpreter and return its result line (or the error)."""
    result = run_script(["--child", tool], rows, workdir, timeout)
    return {"tool": tool, "rows": rows, **result}


def malformed_of(rows: int, args: argparse.Namespace) -> dict[str, int]:
    """Generate the file if needed and count its malformed values, in a separate process.

    The parent stays small: a child's peak RSS must not start from the parent's size.
    """
    print(f"preparing {data_path(args.workdir, rows)} ...", flush=True)
    result = run_script(["--prepare"], rows, args.workdir, args.timeout)
    if "error" in result:
        raise SystemExit(f"could not prepare {rows:,} rows: {result['error']}")
    return {str(k): int(v) for k, v in result["malformed"].items()}


def best_of(tool: str, rows: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``tool`` --repeat times and keep the fastest run."""
    repeat = args.dlt_default_repeat if tool == "dlt-default" else args.repeat
    runs = [run_child(tool, rows, args.workdir, args.timeout) for _ in range(repeat)]
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    best = min(ok, key=lambda r: float(r["seconds"]))
    best["repeats"] = len(ok)
    return best


def plan(args: argparse.Namespace) -> list[tuple[str, int]]:
    """The (tool, rows) runs, in order."""
    runs = []
    for tool in args.tools:
        rows = args.dlt_default_rows if tool == "dlt-default" else args.rows
        runs.append((tool, rows))
    for extra in args.also_rows:
        runs += [(tool, extra) for tool in args.tools if tool in SCALING_TOOLS]
    return runs


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Generate what is missing, run every planned child, attach the file's malformed counts."""
    malformed: dict[int, dict[str, int]] = {}
    results = []
    for tool, rows in plan(args):
        if rows not in malformed:
            malformed[rows] = malformed_of(rows, args)
        print(f"running {tool} on {rows:,} rows ...", flush=True)
        result = best_of(tool, rows, args)
        result["malformed_in_file"] = malformed[rows]
        results.append(result)
        print("  " + summary_line(result), flush=True)
    return results


def summary_line(result: dict[str, Any]) -> str:
    """One line about a result, for progress output."""
    if "error" in result:
        return f"{result['tool']}: FAILED {result['error']}"
    rate = result["rows"] / result["seconds"]
    rss = result["maxrss_kib"] / 1024
    return f"{result['tool']}: {result['seconds']:.2f} s, {rate:,.0f} rows/s, {rss:,.0f} MiB peak"


def handling(result: dict[str, Any]) -> str:
    """What the tool did with the file's malformed values, in words."""
    total = sum(result["malformed_in_file"].values())
    table = result.get("table", {})
    nulled = sum(int(table.get(c, 0)) for c in TYPED)
    if result["tool"] == "mendflow":
        return (
            f"{result.get('dead_letters', 0):,} rows set aside in _mendflow_dead_letters "
            f"(file has {total:,} bad values); {nulled:,} NULLs in typed columns"
        )
    variants = result.get("variants") or {}
    if variants:
        parts = ", ".join(f"{name} {n:,}" for name, n in variants.items())
        return f"{total:,} bad values kept as text in variant columns ({parts}); typed column NULL"
    return f"{nulled:,} of {total:,} bad values silently set to NULL"


def step_notes(results: list[dict[str, Any]]) -> str:
    """Where dlt's time went, per run: its extract, normalize and load steps."""
    lines = []
    for r in results:
        steps = r.get("steps")
        if steps:
            parts = ", ".join(f"{name} {sec:.2f} s" for name, sec in steps.items())
            lines.append(f"- {r['tool']}, {r['rows']:,} rows: {parts}")
    return "dlt steps (from its trace):\n\n" + "\n".join(lines) if lines else ""


def ratio(result: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """Seconds per row relative to mendflow at the same row count (or the closest one)."""
    base = [r for r in results if r["tool"] == "mendflow" and "error" not in r]
    if not base or "error" in result:
        return "n/a"
    ref = min(base, key=lambda r: abs(int(r["rows"]) - int(result["rows"])))
    mine = result["seconds"] / result["rows"]
    theirs = ref["seconds"] / ref["rows"]
    return f"{mine / theirs:.2f}x"


def table_row(result: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """One result as a Markdown table row."""
    head = f"| {result['tool']} | {result['rows']:,} |"
    if "error" in result:
        return head + " failed | | | | | | | " + str(result["error"]).replace("|", "\\|") + " |"
    loaded = int(result.get("table", {}).get("rows", -1))
    return (
        f"{head} {loaded:,} | {result['seconds']:.2f} | {result['cpu_seconds']:.2f} | "
        f"{result['rows'] / result['seconds']:,.0f} | {ratio(result, results)} | "
        f"{result['maxrss_kib'] / 1024:,.0f} | {result['import_seconds']:.2f} | "
        f"{handling(result)} |"
    )


def table(results: list[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    head = (
        "| tool | rows in file | rows in table | seconds | CPU s | rows/s "
        "| time per row vs mendflow | peak RSS (MiB) | import (s) | malformed values |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )
    return "\n".join([head, *(table_row(r, results) for r in results)])


def version(package: str) -> str:
    """The installed version of ``package``, or mendflow's version from pyproject.toml."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        if package != "mendflow":
            return "not installed"
    import tomllib

    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"]) + " (source tree)"


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


def machine(load: tuple[float, float, float]) -> str:
    """The machine and software the figures come from, and how busy it was."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = cpu_model()
    packages = ", ".join(f"{p} {version(p)}" for p in ("mendflow", "duckdb", "pyarrow", "dlt"))
    return (
        f"- CPU: {cpu}, {len(os.sched_getaffinity(0))} logical CPUs (nproc)\n"
        f"- RAM: {ram:.1f} GiB\n"
        f"- OS: {platform.platform()}\n"
        f"- Python {platform.python_version()}; {packages}\n"
        f"- Load average when the run started (1/5/15 min): {load[0]:.2f} / {load[1]:.2f} / "
        f"{load[2]:.2f}"
    )


def command_line(argv: Sequence[str]) -> str:
    """The command that reproduces this run."""
    return "python bench/bench_load.py " + shlex.join(argv)


def report(
    results: list[dict[str, Any]], argv: Sequence[str], load: tuple[float, float, float]
) -> str:
    """The generated section of BENCHMARKS.md."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{MARK_START}\n"
        f"_Generated by `bench/bench_load.py` on {when}._\n\n"
        f"Reproduce:\n\n```\n{command_line(argv)}\n```\n\n"
        f"Machine:\n\n{machine(load)}\n\n"
        f"{table(results)}\n\n"
        f"{step_notes(results)}\n"
        f"{MARK_END}"
    )


def write_report(path: Path, section: str) -> None:
    """Replace the generated section of ``path`` (or create the file around it)."""
    text = path.read_text() if path.exists() else ""
    if MARK_START in text and MARK_END in text:
        before, rest = text.split(MARK_START, 1)
        after = rest.split(MARK_END, 1)[1]
        text = before + section + after
    else:
        text = "# Benchmarks\n\n" + section + "\n" + text
    path.write_text(text)


# --------------------------------------------------------------------------------------------
# Command line


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--also-rows", type=int, nargs="*", default=[], metavar="N")
    parser.add_argument("--dlt-default-rows", type=int, default=1_000_000, metavar="N")
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--repeat", type=int, default=1, help="keep the best of K runs per tool")
    parser.add_argument("--dlt-default-repeat", type=int, default=1, metavar="K")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--write", type=Path, metavar="BENCHMARKS.md")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per child run")
    parser.add_argument("--child", choices=TOOLS, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    args.workdir = args.workdir.resolve()
    if args.child:
        child(args.child, args.rows, args.workdir)
        return
    if args.prepare:
        prepare(args.rows, args.workdir)
        return
    load = os.getloadavg()
    results = run_all(args)
    print()
    print(table(results))
    print("\n" + step_notes(results))
    (args.workdir / "last_results.json").write_text(json.dumps(results, indent=1))
    if args.write:
        write_report(args.write, report(results, argv, load))
        print(f"\nwrote {args.write}")


if __name__ == "__main__":
    main()
