"""``mendflow demo``: a flaky orders API and a CSV drop folder, loaded into one DuckDB file.

Each step runs a pipeline under the healing supervisor, with the state (runs, breakers, the
healing ledger) in ``state.db`` next to the DuckDB file:

1. the orders API misbehaves on a script: a 503, a timeout, a 500, a reset connection and a 429
   with Retry-After, which retries heal; then a burst of 503s that opens the API's circuit
   breaker: the run stops calling it, waits, and a probe closes the breaker;
2. the API goes down: its breaker opens and the orders are served from the last good snapshot;
3. the API is back: the window the snapshot served is read again from the API (converged);
4. ``/customers`` answers 401 to an expired token: permanent, so one page, no retry;
5. three CSV drops under a record contract: bad values, a duplicate key and a ragged line go to
   the dead-letter store with their reasons; a column added mid-stream is added to the table.

The summary lists each incident of the ledger and how it healed. A second demo in the same
folder loads nothing new and leaves the same rows.
"""

from __future__ import annotations

from itertools import groupby
from pathlib import Path
from typing import Any, Final

import duckdb

from mendflow.clock import SYSTEM_CLOCK
from mendflow.demo._api import OrdersApi
from mendflow.demo._drops import (
    dead_letters_by_reason,
    drops_pipeline,
    schema_versions,
    write_drops,
)
from mendflow.events import BatchLoaded, BatchRead, Recovered, RetryScheduled, RunStarted
from mendflow.exceptions import MendflowError
from mendflow.pipeline import Pipeline
from mendflow.remediation.escalation import Alert
from mendflow.remediation.ledger import Ledger
from mendflow.remediation.supervisor import Healing, run_healing
from mendflow.resilience.breaker import BreakerPolicy
from mendflow.resilience.retry import Retry
from mendflow.sinks.duckdb import DuckDBSink
from mendflow.sources.fallback import FallbackSource, SnapshotStore
from mendflow.sources.http import HttpSource, Pagination
from mendflow.state.store import StateStore
from mendflow.testing import EventLog

ORDERS, NEW_ORDERS = 500, 40

#: Step 1's script, by request number: blips on pages 2-4, then four 503s in a row on page 5.
SCRIPT: Final = {
    2: "503", 3: "timeout:1.5", 5: "500", 7: "reset", 8: "429:1",
    10: "503", 11: "503", 12: "503", 13: "503",
}
#: Opens when the last 4 calls all failed; probes after 1 s; one good probe closes it.
BREAKER = BreakerPolicy(window=4, min_calls=4, failure_rate=1.0, open_s=1.0, half_open_probes=1)
HEALING = Healing(max_actions=6, cooldown_s=0.1, backoff=Retry(base_s=0.1, cap_s=1.0))


class _Pager:
    """A notifier that keeps the alerts for the summary."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def notify(self, alert: Alert) -> None:
        self.alerts.append(alert)


def run_demo(workdir: str | Path) -> dict[str, Any]:
    """Run the demo's steps in ``workdir`` and return the summary."""
    folder = Path(workdir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    write_drops(folder / "drops")
    db = folder / "warehouse.duckdb"
    store = StateStore(f"sqlite:///{folder / 'state.db'}")
    log, pager, started = EventLog(), _Pager(), SYSTEM_CLOCK.now()

    def step(title: str, pipeline: Pipeline, expect: str = "succeeded") -> dict[str, Any]:
        return _step(title, pipeline, expect, store, log, pager)

    try:
        with OrdersApi(orders=ORDERS, faults=SCRIPT) as api:
            orders = _orders_pipeline(api.url, db, SnapshotStore(folder / "snapshots"))
            steps = [step("flaky API: blips, a rate limit, a 503 burst", orders)]
            api.add_orders(NEW_ORDERS)
            api.outage("503")
            steps.append(step("API down: served from the last snapshot", orders))
            api.recover()
            SYSTEM_CLOCK.sleep(BREAKER.open_s)  # until the breaker lets a probe through
            steps.append(step("API back: re-read from where it failed", orders))
            steps.append(step("401 on /customers", _customers_pipeline(api.url, db), "escalated"))
            faults = [f"request {s.number}: {s.fault}" for s in api.log if s.fault]
        drops = drops_pipeline(folder / "drops", db)
        steps.append(step("CSV drops: bad rows, a ragged line, a new column", drops))
        incidents = [  # this demo's, and any an earlier one left unhealed
            i for i in Ledger(store).incidents(limit=1_000)
            if i["detected_at"] >= started or i["status"] != "healed"
        ]
    finally:
        store.close()
    return {
        "workdir": str(folder),
        "destination": str(db),
        "pipelines": steps,
        "tables": _counts(db),
        "faults_injected": faults,
        "went_wrong": [_problem(e) for e in log if isinstance(e, RetryScheduled)],
        "recovered": [
            {"dependency": e.dependency, "attempts": e.attempts}
            for e in log
            if isinstance(e, Recovered)
        ],
        "incidents": [_incident(i) for i in reversed(incidents)],
        "dead_letters": dead_letters_by_reason(db),
        "schema_versions": schema_versions(db),
        "pages": [{"kind": a.kind, "pipeline": a.pipeline, "failure_class": a.failure_class,
                   "dependency": a.dependency} for a in pager.alerts],
        "failed": any(s["status"] != s["expected"] for s in steps),
    }


def render(summary: dict[str, Any]) -> str:
    """The summary as text for a terminal."""
    lines = [f"mendflow demo in {summary['workdir']}", ""]
    for p in summary["pipelines"]:
        lines.append(
            f"  {p['step']:<44} {p['status']:<9} {p['runs']} run(s), read {p['rows_read']:>4}, "
            f"loaded {p['rows_loaded']:>4}, dead letters {p['dead_letters']}"
        )
    lines += ["", "  tables: " + ", ".join(f"{t} {n} rows" for t, n in summary["tables"].items())]
    lines += ["", f"  incidents and how they healed ({len(summary['incidents'])}):"]
    for i in summary["incidents"]:
        took = "" if i["healed_in_s"] is None else f" in {i['healed_in_s']:.1f}s"
        lines.append(
            f"    - {i['pipeline']} / {i['dependency'] or '-'}: {i['failure_class']}, "
            f"{i['status']}{took}{' (paged)' if i['escalated'] else ''}"
        )
        lines.append(f"        {i['story']}")
    if not summary["incidents"]:
        lines.append("    - none")
    pages = summary["pages"]
    lines += ["", f"  pages sent ({len(pages)}):"]
    lines += [f"    - {a['kind']}: {a['pipeline']} {a['failure_class']} on {a['dependency']}"
              for a in pages] or ["    - none"]
    dead = summary["dead_letters"]
    drops = f"{summary['workdir']}/store_drops.yaml"
    lines += ["", f"  dead letters of the CSV drops ({len(dead)}; `mendflow dlq list {drops}`):"]
    lines += [f"    - {d['stage']}: {d['reason']}" for d in dead] or ["    - none"]
    lines += ["", f"  store_sales schema versions (`mendflow schema history {drops}`):"]
    for v in summary["schema_versions"]:
        changes = [f"{c['change']} {c['column']} {c['to'] or ''}".strip() for c in v["changes"]]
        said = f"created with {len(changes)} columns" if v["version"] == 1 else ", ".join(changes)
        lines.append(f"    - v{v['version']}: {said}")
    lines += ["", f"  the DuckDB file: {summary['destination']}"]
    return "\n".join(lines)


def _orders_pipeline(url: str, db: Path, snapshots: SnapshotStore) -> Pipeline:
    api = HttpSource(
        f"{url}/orders",
        records_path="data",
        pagination=Pagination(kind="cursor", cursor_param="cursor", cursor_path="next_cursor"),
        incremental_field="updated_at",
        incremental_param="updated_since",
        params={"limit": "100"},
        timeout_s=0.5,
        retry=Retry(attempts=5, base_s=0.05, cap_s=0.5, deadline_s=30),
        breaker=BREAKER,
        name="orders-api",
    )
    return Pipeline(
        name="api_orders",
        source=FallbackSource(api, snapshots=snapshots),
        destination=DuckDBSink(db, table="orders"),
        write_mode="merge",
        primary_key=("id",),
        columns={"amount": "double", "qty": "bigint", "updated_at": "timestamptz"},
    )


def _customers_pipeline(url: str, db: Path) -> Pipeline:
    source = HttpSource(
        f"{url}/customers",
        records_path="data",
        headers={"Authorization": "Bearer expired-token"},
        retry=Retry(attempts=5, base_s=0.05, cap_s=0.5),
        breaker=BREAKER,
        name="customers-api",
    )
    return Pipeline(
        name="api_customers", source=source, destination=DuckDBSink(db, table="customers"),
        write_mode="replace",
    )


def _step(
    title: str,
    pipeline: Pipeline,
    expect: str,
    store: StateStore,
    log: EventLog,
    pager: _Pager,
) -> dict[str, Any]:
    events = EventLog()  # the step's own, over every run healing made
    try:
        run_healing(pipeline, store=store, healing=HEALING, notifiers=[pager],
                    hooks=[log, events])
        status, error = "succeeded", ""
    except MendflowError as exc:
        current = Ledger(store).current(pipeline.name)
        status = "escalated" if current is not None and current.escalated else "failed"
        error = str(exc)
    loaded = [e for e in events if isinstance(e, BatchLoaded)]
    return {
        "step": title, "pipeline": pipeline.name, "expected": expect, "status": status,
        "runs": sum(isinstance(e, RunStarted) for e in events),
        "rows_read": sum(e.rows for e in events if isinstance(e, BatchRead)),
        "rows_loaded": sum(e.rows for e in loaded),
        "dead_letters": sum(e.dead_letters for e in loaded),
        "error": error,
    }


def _incident(row: dict[str, Any]) -> dict[str, Any]:
    recovered = row["recovered_at"]
    steps = [f"{a['action']} {a['outcome']}" for a in row["actions"]]
    story = ", ".join(
        step if n == 1 else f"{step} x{n}"
        for step, n in ((s, len(list(g))) for s, g in groupby(steps))
    )
    return {
        "incident_id": row["incident_id"],
        "pipeline": row["pipeline"],
        "dependency": row["dependency"],
        "failure_class": row["failure_class"],
        "status": row["status"],
        "escalated": bool(row["escalated"]),
        "healed_in_s": None if recovered is None else round(recovered - row["detected_at"], 3),
        "actions": [{"action": a["action"], "outcome": a["outcome"]} for a in row["actions"]],
        "story": story or "no action",
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
