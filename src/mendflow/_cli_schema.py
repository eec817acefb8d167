"""``mendflow schema``: the destination table's schema versions, with their diffs."""

from __future__ import annotations

import json
import os

import click

from mendflow import config
from mendflow._cli_base import Commands
from mendflow.contracts.schema import Change, Version
from mendflow.exceptions import ConfigError
from mendflow.sinks.duckdb import DuckDBSink
from mendflow.typing import Sink

__all__ = ["schema"]

_MARKS = {"added": "+", "widened": "~", "narrowed": "~", "removed": "-", "discarded": "x"}

schema = Commands("schema", help="The destination table's schema: its versions and diffs.")


@schema.command("history")
@click.argument("pipeline_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def history(pipeline_file: str, as_json: bool) -> None:
    """Every version of the schema of PIPELINE_FILE's destination table, oldest first."""
    sink = config.load(pipeline_file).pipeline.destination
    if not callable(getattr(sink, "schema_history", None)):
        raise ConfigError(
            f"{pipeline_file}: its destination ({sink.name}) keeps no schema history; the "
            "DuckDB, PostgreSQL and SQLite destinations do."
        )
    versions = _versions(sink)
    if as_json:
        click.echo(json.dumps([v.as_dict() for v in versions]))
        return
    if not versions:
        table = getattr(sink, "table", "the table")
        click.echo(f"no schema versions of {table} yet; run the pipeline to create it.")
        return
    for version in versions:
        click.echo(render(version))


def render(version: Version) -> str:
    """One version as text: a header line, then one line per change."""
    head = (
        f"{version.table} v{version.version}  {version.at}  pipeline {version.pipeline}, "
        f"run {version.run_id}, batch {version.batch_id}"
    )
    return "\n".join([head, *(f"  {line(c)}" for c in version.changes)])


def line(change: Change) -> str:
    """``+ col TYPE``, ``~ col OLD → NEW``, ``- col``."""
    mark = _MARKS[change.change]
    if change.change in ("widened", "narrowed"):
        return f"{mark} {change.column} {change.before} → {change.after}"
    if change.change == "added":
        return f"{mark} {change.column} {change.after}"
    return f"{mark} {change.column}"


def _versions(sink: Sink) -> list[Version]:
    if isinstance(sink, DuckDBSink) and not os.path.exists(sink.path):
        return []  # never loaded: nothing to show, and no empty database left behind
    try:
        versions: list[Version] = sink.schema_history()  # type: ignore[attr-defined]
        return versions
    finally:
        sink.close()
