"""``mendflow chaos``: run a pipeline under seeded faults and compare (thin over run_chaos)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mendflow.chaos import FAULT_KINDS, ChaosOptions, SeedReport, run_chaos
from mendflow.chaos._report import _seed_line
from mendflow.chaos.plan import parse_kinds


@click.command("chaos")
@click.argument("pipeline_file", type=click.Path(dir_okay=False))
@click.option("--seeds", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many fault schedules to run.")
@click.option("--first-seed", type=int, default=1, show_default=True,
              help="The first seed; seeds run from it upwards.")
@click.option("--faults", default=",".join(FAULT_KINDS), show_default=True,
              help="Fault kinds to inject, comma-separated.")
@click.option("--max-faults", type=click.IntRange(1, len(FAULT_KINDS)), default=3,
              show_default=True, help="At most this many faults per seed.")
@click.option("--key", default=None, help="Column(s) that identify a row, comma-separated "
              "(default: the pipeline's primary_key).")
@click.option("--workdir", type=click.Path(file_okay=False), default=".mendflow/chaos",
              show_default=True, help="Folder for the seeds' destinations and state.")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Seeds to run at once.")
@click.option("--keep", is_flag=True, help="Keep each seed's destination and state.")
@click.option("--wrap-sink", default=None, hidden=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def chaos(pipeline_file: str, seeds: int, first_seed: int, faults: str, max_faults: int,
          key: str | None, workdir: str, jobs: int, keep: bool, wrap_sink: str | None,
          as_json: bool) -> None:
    """Run PIPELINE_FILE fault-free, then under seeded faults; compare every result.

    Exits 1 when a seed's result differs from the fault-free run or a fault kind asked for was
    never injected.
    """
    options = ChaosOptions(
        seeds=seeds, first_seed=first_seed, kinds=parse_kinds(faults), max_faults=max_faults,
        key=tuple(k.strip() for k in key.split(",") if k.strip()) if key else (),
        workdir=Path(workdir), jobs=jobs, keep=keep, wrap_sink=wrap_sink,
    )

    def progress(seed: SeedReport) -> None:
        if not as_json:
            click.echo(_seed_line(seed), err=True)

    report = run_chaos(pipeline_file, options, progress=progress)
    click.echo(json.dumps(report.as_dict()) if as_json else report.render())
    if report.failed:
        sys.exit(1)
