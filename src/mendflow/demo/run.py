"""``mendflow demo``: a flaky orders API and a CSV drop folder, loaded into one DuckDB file.

The API misbehaves on a fixed script (a 503, a timeout, a 500, a reset connection, a rate limit);
retries heal each one. The drop folder has two CSV files, one with a malformed amount, which is
set aside as a dead letter. A second run loads nothing new and leaves the same rows.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import duckdb

from mendflow.demo._api import DEFAULT_FAULTS, OrdersApi
from mendflow.events import Recovered, RetryScheduled
from mendflow.exceptions import MendflowError
from mendflow.pipeline import Pipeline
from mendflow.resilience.retry import Retry
from mendflow.sinks.duckdb import DuckDBSink
from mendflow.sources.files import FileSource
from mendflow.sources.http import HttpSource, Pagination
from mendflow.state.store import StateStore
from mendflow.testing import EventLog

ORDERS = 500
DROPS = ("sales-2026-01-01.csv", "sales-2026-01-02.csv")


def run_demo(workdir: str | Path) -> dict[str, Any]:
    """Run both demo pipelines in ``workdir`` and return the summary."""
    folder = Path(workdir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    _write_drops(folder / "drops")
    db = folder / "warehouse.duckdb"
    store = StateStore(f"sqlite:///{folder / 'state.db'}")
    log = EventLog()
    try:
        with OrdersApi(orders=ORDERS, faults=DEFAULT_FAULTS) as api:
            results = [_run(_api_pipeline(api.url, db), log, store)]
            faults = [f"request {s.number}: {s.fault}" for s in api.log if s.fault]
        results.append(_run(_drops_pipeline(folder / "drops", db), log, store))
    finally:
        store.close()
    return {
        "workdir": str(folder),
        "destination": str(db),
        "pipelines": results,
        "tables": _counts(db),
        "faults_injected": faults,
        "went_wrong": [_problem(e) for e in log if isinstance(e, RetryScheduled)],
        "recovered": [
            {"dependency": e.dependency, "attempts": e.attempts}
            for e in log
            if isinstance(e, Recovered)
        ],
        "failed": any(r["status"] != "succeeded" for r in results),
    }


def render(summary: dict[str, Any]) -> str:
    """The summary as text for a terminal."""
    lines = [f"mendflow demo in {summary['workdir']}", ""]
    for p in summary["pipelines"]:
        lines.append(
            f"  {p['pipeline']:<12} {p['status']:<9} read {p['rows_read']:>4}, loaded "
            f"{p['rows_loaded']:>4}, dead letters {p['dead_letters']}  ({p['source']})"
        )
        if p.get("error"):
            lines.append(f"      error: {p['error']}")
    lines += ["", "  tables: " + ", ".join(f"{t} {n} rows" for t, n in summary["tables"].items())]
    lines += ["", f"  what went wrong ({len(summary['went_wrong'])}):"]
    lines += [
        f"    - {w['dependency']}: {w['error_type']}: {w['error'].split(';')[0]}; retried after "
        f"{w['delay_s']:.2f}s"
        for w in summary["went_wrong"]
    ] or ["    - nothing"]
    lines += [f"  what recovered ({len(summary['recovered'])}):"]
    lines += [
        f"    - {r['dependency']} answered on attempt {r['attempts']}" for r in summary["recovered"]
    ] or ["    - nothing needed to"]
    lines += ["", f"  the DuckDB file: {summary['destination']}"]
    return "\n".join(lines)


def _api_pipeline(url: str, db: Path) -> Pipeline:
    source = HttpSource(
        f"{url}/orders",
        records_path="data",
        pagination=Pagination(kind="cursor", cursor_param="cursor", cursor_path="next_cursor"),
        incremental_field="updated_at",
        incremental_param="updated_since",
        params={"limit": "100"},
        timeout_s=0.5,
        retry=Retry(attempts=5, base_s=0.05, cap_s=0.5, deadline_s=30),
        name="orders-api",
    )
    return Pipeline(
        name="api_orders",
        source=source,
        destination=DuckDBSink(db, table="orders"),
        write_mode="merge",
        primary_key=("id",),
        columns={"amount": "double", "qty": "bigint", "updated_at": "timestamptz"},
    )


def _drops_pipeline(drops: Path, db: Path) -> Pipeline:
    return Pipeline(
        name="store_drops",
        source=FileSource(drops / "*.csv", name="csv-drops"),
        destination=DuckDBSink(db, table="store_sales"),
        write_mode="append",
        columns={"amount": "double", "qty": "bigint", "sold_at": "timestamp"},
    )


def _run(pipeline: Pipeline, log: EventLog, store: StateStore) -> dict[str, Any]:
    base = {"pipeline": pipeline.name, "source": pipeline.source.name}
    try:
        result = pipeline.run(hooks=[log], state=store)
    except MendflowError as exc:
        return base | {
            "status": "failed",
            "rows_read": 0,
            "rows_loaded": 0,
            "dead_letters": 0,
            "error": str(exc),
        }
    return base | {
        "status": "succeeded",
        "rows_read": result.rows_read,
        "rows_loaded": result.rows_loaded,
        "dead_letters": result.dead_letters,
    }


def _problem(event: RetryScheduled) -> dict[str, Any]:
    return {
        "dependency": event.dependency,
        "error_type": event.error_type,
        "error": event.error,
        "attempt": event.attempt,
        "delay_s": event.delay_s,
    }


def _counts(db: Path) -> dict[str, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = ("orders", "store_sales", "_mendflow_dead_letters")
        return {t: _count(con, t) for t in tables}
    finally:
        con.close()


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]
    ).fetchone()
    if not row or not row[0]:
        return 0
    found = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()
    return int(found[0]) if found else 0


def _write_drops(folder: Path) -> None:
    """Two deterministic CSV files of store sales; the second has one malformed amount."""
    folder.mkdir(exist_ok=True)
    rng = random.Random(7)
    for day, name in enumerate(DROPS, 1):
        rows = [
            {
                "sale_id": day * 1000 + i,
                "store": rng.choice(["berlin", "lyon", "porto", "turin"]),
                "sku": f"SKU-{rng.randint(100, 999)}",
                "qty": rng.randint(1, 5),
                "amount": f"{rng.uniform(2, 300):.2f}",
                "sold_at": f"2026-01-{day:02d} {8 + i % 12:02d}:{i % 60:02d}:00",
            }
            for i in range(150)
        ]
        if day == 2:
            rows[42]["amount"] = "n/a"
        path = folder / name
        if path.exists():
            continue
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
