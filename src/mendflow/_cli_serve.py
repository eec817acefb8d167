"""``mendflow serve``: the scheduler, API, webhook and dashboard (helper C)."""

from __future__ import annotations

import click


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
def serve(paths: tuple[str, ...]) -> None:
    """Serve the pipelines in PATHS (YAML files or folders of them)."""
    raise click.UsageError("mendflow serve is not built yet (issue 6)")
