"""The ``mendflow`` command: a thin layer over the public API.

Exit codes: 0 success; 1 a run failed; 2 a user error (bad file, bad option); 130 interrupted.
Errors print one paragraph saying what is wrong and what to do, never a traceback (set
MENDFLOW_DEBUG=1 to see one).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import click

from mendflow import config
from mendflow._cli_base import Commands
from mendflow._cli_chaos import chaos
from mendflow._cli_contract import contract
from mendflow._cli_dlq import dlq
from mendflow._cli_schema import schema
from mendflow._cli_serve import serve
from mendflow._cli_worker import worker
from mendflow.events import BatchLoaded, Event, RunFailed, RunFinished
from mendflow.remediation.escalation import LogNotifier, Notifier, WebhookNotifier
from mendflow.remediation.kpi import service_levels
from mendflow.remediation.ledger import Ledger
from mendflow.remediation.supervisor import run_healing
from mendflow.state.store import StateStore, default_state_url

_STATE_HELP = "State store URL (default: $MENDFLOW_STATE_URL or sqlite:///.mendflow/state.db)."


@click.group(cls=Commands)
@click.version_option(package_name="mendflow")
def main() -> None:
    """Self-healing data pipelines with exactly-once loads."""


for _commands in (chaos, contract, dlq, schema, serve, worker):
    main.add_command(_commands)


@main.command()
@click.argument("pipeline_file", type=click.Path(dir_okay=False))
@click.option("--state", "state_url", default=None, help=_STATE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def run(pipeline_file: str, state_url: str | None, as_json: bool) -> None:
    """Run the pipeline declared in PIPELINE_FILE (YAML) once."""
    spec = config.load(pipeline_file)
    store = StateStore(state_url or spec.state or default_state_url())
    progress = _Progress(enabled=not as_json and sys.stderr.isatty())
    notifiers: list[Notifier] = [LogNotifier()]
    webhook = spec.webhook or os.environ.get("MENDFLOW_WEBHOOK_URL")
    if webhook:
        notifiers.append(WebhookNotifier(webhook))
    try:
        result = run_healing(
            spec.pipeline, store=store, healing=spec.healing, notifiers=notifiers, hooks=[progress]
        )
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(result.as_dict(), default=str))
        return
    click.echo(
        f"{result.pipeline}: read {result.rows_read:,} rows, loaded {result.rows_loaded:,}, "
        f"dead letters {result.dead_letters:,}, batches {result.batches} "
        f"(skipped {result.skipped}) in {result.duration_s:.2f}s"
    )


@main.command()
@click.option("--state", "state_url", default=None, help=_STATE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(state_url: str | None, as_json: bool) -> None:
    """Per pipeline: the last run, rows loaded and the committed checkpoint."""
    with _store(state_url) as store:
        rows = store.status()
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    if not rows:
        click.echo("no runs recorded yet; run a pipeline with `mendflow run PIPELINE.yaml`.")
        return
    for row in rows:
        last = row["last_run"]
        click.echo(
            f"{row['pipeline']}: last run {last['status']} at {last['started_at']}, "
            f"{row['runs']} runs, {row['rows_loaded']:,} rows loaded, "
            f"{row['dead_letters']:,} dead letters"
        )
        click.echo(f"  checkpoint: {json.dumps(row['checkpoint'], sort_keys=True)}")


@main.command()
@click.option("--pipeline", default=None, help="Only this pipeline's runs.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--state", "state_url", default=None, help=_STATE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs(pipeline: str | None, limit: int, state_url: str | None, as_json: bool) -> None:
    """The run history, newest first."""
    with _store(state_url) as store:
        rows = store.runs(pipeline=pipeline, limit=limit)
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    _table(
        ["started", "pipeline", "status", "read", "loaded", "dead", "retries", "error"],
        [
            [r["started_at"], r["pipeline"], r["status"], f"{r['rows_read']:,}",
             f"{r['rows_loaded']:,}", f"{r['dead_letters']:,}", str(r["retries"]),
             (r["error"] or "")[:60]]
            for r in rows
        ],
    )


@main.group(invoke_without_command=True)
@click.option("--pipeline", default=None, help="Only this pipeline's incidents.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--state", "state_url", default=None, help=_STATE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def incidents(
    ctx: click.Context, pipeline: str | None, limit: int, state_url: str | None, as_json: bool
) -> None:
    """The healing ledger: incidents, newest first (`incidents show ID` for one)."""
    ctx.obj = {"state_url": state_url, "as_json": as_json}
    if ctx.invoked_subcommand is not None:
        return
    with _store(state_url) as store:
        rows = Ledger(store).incidents(pipeline=pipeline, limit=limit)
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    _table(
        ["incident", "pipeline", "class", "status", "escalated", "actions", "dependency"],
        [
            [r["incident_id"][:8], r["pipeline"], r["failure_class"], r["status"],
             "yes" if r["escalated"] else "no", " > ".join(a["action"] for a in r["actions"]),
             r["dependency"][:40]]
            for r in rows
        ],
    )


@incidents.command("show")
@click.argument("incident_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def incidents_show(ctx: click.Context, incident_id: str, as_json: bool) -> None:
    """One incident with its evidence and every action tried."""
    with _store(ctx.obj["state_url"]) as store:
        found = Ledger(store).incident(incident_id)
    if found is None:
        raise click.UsageError(
            f"no single incident matches {incident_id!r}; list them with `mendflow incidents`."
        )
    if as_json or ctx.obj["as_json"]:
        click.echo(json.dumps(found, default=str))
        return
    click.echo(f"incident {found['incident_id']} ({found['pipeline']}): {found['failure_class']}, "
               f"{found['status']}, escalated: {'yes' if found['escalated'] else 'no'}")
    click.echo(f"  evidence: {json.dumps(found['evidence'], sort_keys=True)}")
    for action in found["actions"]:
        click.echo(f"  - {action['action']}: {action['outcome']} ({action['detail'][:100]})")


@main.command()
@click.option("--pipeline", default=None, help="Only this pipeline.")
@click.option("--freshness-s", default=3600.0, show_default=True, type=click.FloatRange(min=1),
              help="Data older than this many seconds counts as unavailable.")
@click.option("--state", "state_url", default=None, help=_STATE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def slo(pipeline: str | None, freshness_s: float, state_url: str | None, as_json: bool) -> None:
    """Per pipeline: availability, MTTR, MTBF, auto-heal rate, retries (from the ledger)."""
    with _store(state_url) as store:
        levels = service_levels(store, now=time.time(), freshness_s=freshness_s)
    levels = [lv for lv in levels if pipeline is None or lv.pipeline == pipeline]
    if as_json:
        click.echo(json.dumps([lv.as_dict() for lv in levels]))
        return
    _table(
        ["pipeline", "availability", "incidents", "MTTR", "MTBF", "auto-heal", "retries",
         "retry success"],
        [
            [lv.pipeline, _pct(lv.availability), f"{lv.incidents} ({lv.open_incidents} open)",
             _secs(lv.mttr_s), _secs(lv.mtbf_s), _pct(lv.auto_heal_rate), str(lv.retries),
             _pct(lv.retry_success_rate)]
            for lv in levels
        ],
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}s"


@main.command()
@click.option("--workdir", default="mendflow-demo", show_default=True,
              type=click.Path(file_okay=False), help="Folder for the demo's files.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(workdir: str, as_json: bool) -> None:
    """Run the bundled demo: a flaky orders API and a CSV drop folder into DuckDB."""
    from mendflow.demo.run import render, run_demo

    summary = run_demo(workdir)
    click.echo(json.dumps(summary, default=str) if as_json else render(summary))
    if summary["failed"]:
        sys.exit(1)


@contextlib.contextmanager
def _store(url: str | None) -> Iterator[StateStore]:
    """The state store named by ``url`` (or the default), closed after use."""
    store = StateStore(url or default_state_url())
    try:
        yield store
    finally:
        store.close()


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for line in [header, *rows]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=False)))


class _Progress:
    """A live line on a terminal while a long run loads: rows, batches, rate."""

    def __init__(self, *, enabled: bool, write: Callable[[str], Any] = sys.stderr.write) -> None:
        self.enabled = enabled
        self.write = write
        self.rows = 0
        self.batches = 0
        self.started = time.monotonic()

    def __call__(self, event: Event) -> None:
        if not self.enabled:
            return
        if isinstance(event, BatchLoaded):
            self.rows += event.rows
            self.batches += 1
            elapsed = time.monotonic() - self.started
            if elapsed > 1:
                self.write(
                    f"\r{event.pipeline}: {self.rows:,} rows in {self.batches} batches, "
                    f"{self.rows / elapsed:,.0f} rows/s "
                )
        elif isinstance(event, RunFinished | RunFailed) and time.monotonic() - self.started > 1:
            self.write("\n")

