"""``mendflow contract``: draft a record contract from a sample of a data file."""

from __future__ import annotations

import glob
import os

import click

from mendflow import config
from mendflow._cli_base import Commands
from mendflow.contracts.infer import render
from mendflow.exceptions import ConfigError
from mendflow.sources.files import FileSource

__all__ = ["contract"]

contract = Commands("contract", help="Record contracts: column types, nullability, checks.")


@contract.command("infer")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("--sample", default=10_000, show_default=True, help="Rows to sample.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the contract to this file (default: print it).")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
def infer(source: str, sample: int, output: str | None, force: bool) -> None:
    """Write a starting contract for SOURCE: a data file (.jsonl, .csv, .parquet), or a
    pipeline YAML whose source is files (its first matching file is sampled)."""
    text = render(_data_file(source), sample=sample)
    if output is None:
        click.echo(text, nl=False)
        return
    if os.path.exists(output) and not force:
        raise ConfigError(f"{output} exists; pass --force to overwrite it.")
    with open(output, "w", encoding="utf-8") as file:
        file.write(text)
    click.echo(f"wrote {output}; review it, then paste it into the pipeline file.", err=True)


def _data_file(source: str) -> str:
    """``source``, or the first file a pipeline YAML's file source matches."""
    if not source.endswith((".yaml", ".yml")):
        return source
    files = config.load(source).pipeline.source
    if not isinstance(files, FileSource):
        raise ConfigError(f"{source}: its source is not files; give a data file to sample.")
    found = sorted(p for p in glob.glob(files.pattern, recursive=True) if os.path.isfile(p))
    if not found:
        raise ConfigError(f"{source}: its source matches no file yet; give a data file.")
    return found[0]
