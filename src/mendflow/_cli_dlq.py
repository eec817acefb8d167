"""``mendflow dlq``: list, show, replay, purge and export dead letters (thin over deadletter)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from mendflow import config
from mendflow._cli_base import Commands
from mendflow.deadletter import DeadLetter, DeadLetterStore, Filter, replay, store_for

F = TypeVar("F", bound=Callable[..., Any])
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@click.group("dlq", cls=Commands)
def dlq() -> None:
    """The dead-letter store: records set aside, why, and their replay."""


class _Time(click.ParamType[float, Any]):
    """ISO 8601 (``2026-01-31T12:00:00Z``; no zone means UTC) or ago (``30m``, ``2h``, ``7d``)."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> float:
        if isinstance(value, float):
            return value
        text = str(value).strip()
        ago = _RELATIVE.fullmatch(text)
        if ago:
            return time.time() - float(ago[1]) * _UNITS[ago[2]]
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is not a time; use ISO 8601 (2026-01-31T12:00:00Z) or an age "
                      "such as 30m, 2h or 7d.", param, ctx)
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _filters(*, pipeline: bool = True) -> Callable[[F], F]:
    """The selection options every command shares."""
    def wrap(command: F) -> F:
        options = [
            click.option("--check", default=None, help="Only records that failed this check."),
            click.option("--stage", default=None, help="Only records set aside at this stage."),
            click.option("--since", type=_Time(), default=None,
                         help="Last seen at or after (ISO 8601, or an age: 30m, 2h, 7d)."),
            click.option("--until", type=_Time(), default=None, help="Last seen before."),
            click.option("--limit", type=click.IntRange(min=1), default=None,
                         help="At most this many, oldest first."),
        ]
        if pipeline:
            options.append(click.option(
                "--pipeline", "pipeline_name", default=None,
                help="Another pipeline's dead letters in the same destination."))
        for option in reversed(options):
            command = option(command)
        return click.argument("pipeline_file", type=click.Path(dir_okay=False))(command)
    return wrap


@contextmanager
def _open(pipeline_file: str) -> Iterator[tuple[config.PipelineFile, DeadLetterStore]]:
    spec = config.load(pipeline_file)
    try:
        yield spec, store_for(spec.pipeline.destination)
    finally:
        spec.pipeline.destination.close()


def _where(spec: config.PipelineFile, options: dict[str, Any]) -> Filter:
    return Filter(
        pipeline=options.get("pipeline_name") or spec.pipeline.name, check=options["check"],
        stage=options["stage"], since=options["since"], until=options["until"],
        limit=options["limit"],
    )


@dlq.command("list")
@_filters()
@click.option("--json", "as_json", is_flag=True, help="Print JSON, records included.")
def list_(pipeline_file: str, as_json: bool, **options: Any) -> None:
    """The dead letters of the pipeline in PIPELINE_FILE, oldest first."""
    with _open(pipeline_file) as (spec, store):
        letters = store.list(_where(spec, options))
    if as_json:
        click.echo(json.dumps([letter.as_dict() for letter in letters], ensure_ascii=False))
        return
    if not letters:
        click.echo("no dead letters match.")
        return
    rows = [[str(x.id), x.stage, x.batch_id[-32:], str(x.attempts), _iso(x.last_seen),
             _cut(x.reason, 70)] for x in letters]
    _table(["id", "stage", "batch", "attempts", "last seen", "reason"], rows)


@dlq.command()
@click.argument("pipeline_file", type=click.Path(dir_okay=False))
@click.argument("letter_id", metavar="ID", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(pipeline_file: str, letter_id: int, as_json: bool) -> None:
    """One dead letter with every failed check and the record itself."""
    with _open(pipeline_file) as (_, store):
        letter = store.get(letter_id)
    if letter is None:
        raise click.UsageError(
            f"no dead letter has id {letter_id}; list them with `mendflow dlq list "
            f"{pipeline_file}`."
        )
    if as_json:
        click.echo(json.dumps(letter.as_dict(), ensure_ascii=False))
        return
    _show(letter)


@dlq.command("replay")
@_filters(pipeline=False)
@click.option("--force", is_flag=True, help="Also records tried max_replays times (poison).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def replay_(pipeline_file: str, force: bool, as_json: bool, **options: Any) -> None:
    """Run the dead letters through the current contract and transforms; load those that pass."""
    spec = config.load(pipeline_file)
    result = replay(spec.pipeline, where=_where(spec, options), force=force)
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    click.echo(f"{spec.pipeline.name}: loaded {result.loaded:,}, failed again {result.failed:,}, "
               f"skipped {result.skipped:,}, poison {result.poison:,}")
    if result.skipped:
        click.echo("  skipped: CSV lines and raw bytes cannot be parsed without their file; "
                   "export them, fix them and drop the file again.")
    if result.poison:
        click.echo(f"  poison: tried {spec.pipeline.max_replays} times already; fix them or "
                   "replay with --force.")
    for reason in result.blocked:
        click.echo(f"  rolled back (attempts counted): {reason}")


@dlq.command()
@_filters()
@click.option("--all", "everything", is_flag=True, help="Purge without any filter.")
@click.option("--yes", is_flag=True, help="Really delete: there is no undo.")
def purge(pipeline_file: str, everything: bool, yes: bool, **options: Any) -> None:
    """Delete dead letters for good (export them first if in doubt)."""
    with _open(pipeline_file) as (spec, store):
        where = _where(spec, options)
        if not where.narrows and not everything:
            raise click.UsageError("no filter given: add --check/--stage/--since/--until/"
                                   "--limit, or --all to purge every dead letter of the pipeline.")
        if not yes:
            raise click.UsageError("purging deletes for good; add --yes to go ahead.")
        count = store.purge(where)
    click.echo(f"purged {count:,} dead letters of {where.pipeline}.")


@dlq.command()
@_filters()
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default="-",
              help="File to write (default: standard output).")
def export(pipeline_file: str, output: str, **options: Any) -> None:
    """Write dead letters as JSON lines, records included (base64 when not UTF-8)."""
    with _open(pipeline_file) as (spec, store), click.open_file(
        output, "w", encoding="utf-8"
    ) as out:
        count = store.export(_where(spec, options), out)
    click.echo(f"exported {count:,} dead letters.", err=True)


def _show(letter: DeadLetter) -> None:
    fields = letter.as_dict()
    for name in ("id", "pipeline", "run_id", "batch_id", "row_index", "stage", "reason",
                 "format", "attempts", "first_seen", "last_seen"):
        click.echo(f"{name + ':':<11} {fields[name]}")
    click.echo("checks:")
    for check in letter.checks:
        click.echo(f"  - {check.get('check')} ({check.get('column') or '-'}): "
                   f"{check.get('message')}")
    click.echo(f"record ({fields['encoding']}):")
    click.echo(f"  {fields['record']}")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=False)]
    for line in [header, *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)).rstrip())
