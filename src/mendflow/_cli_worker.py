"""``mendflow worker``: take queued runs from the state store and run them (helper A)."""

from __future__ import annotations

import click


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
def worker(paths: tuple[str, ...]) -> None:
    """Run queued jobs of the pipelines in PATHS (YAML files or folders of them)."""
    raise click.UsageError("mendflow worker is not built yet (issue 6)")
