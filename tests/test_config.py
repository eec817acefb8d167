"""Pipelines in YAML: every key checked, every mistake named with what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from mendflow import ConfigError, DuckDBSink, FileSource, HttpSource
from mendflow.config import load
from tests.conftest import write_pipeline

BASE = {
    "name": "orders",
    "source": {"type": "files", "path": "drops/*.jsonl"},
    "destination": {"type": "duckdb", "path": "w.duckdb", "table": "orders"},
}


def test_relative_paths_start_at_the_yaml_files_folder(tmp_path: Path) -> None:
    """Paths in the file are resolved against its folder, not the working directory."""
    spec = load(write_pipeline(tmp_path / "p.yaml", **BASE, write_mode="merge", primary_key="id"))
    assert isinstance(spec.pipeline.source, FileSource)
    assert spec.pipeline.source.pattern == str(tmp_path / "drops/*.jsonl")
    assert isinstance(spec.pipeline.destination, DuckDBSink)
    assert spec.pipeline.destination.path == str(tmp_path / "w.duckdb")
    assert spec.pipeline.primary_key == ("id",)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"write_mod": "merge"}, r"unknown key 'write_mod' \(did you mean 'write_mode'\?\)"),
        ({"source": {"type": "files", "paht": "x"}}, r"source: unknown key 'paht' .*'path'"),
        ({"source": {"type": "filez"}}, r"source.type is 'filez'.*did you mean 'files'"),
        ({"destination": {"type": "duckdb", "path": "x"}}, r"destination: `table:` is required"),
        ({"write_mode": "upsert"}, r"unknown write mode 'upsert'; use one of: append, merge"),
        ({"columns": {"amount": "dubble"}}, r"column 'amount': unknown column type 'dubble'"),
        ({"transforms": [{"sql": "SELECT 1"}]}, r"does not read `batch`"),
        ({"transforms": [{"python": "nope_module:f"}]}, r"cannot import transform"),
        ({"source": {"type": "http", "url": "ftp://x"}}, r"URL .ftp://x. is not http"),
        ({"source": {"type": "files", "path": "x", "batch_size": 0}}, r"positive whole number"),
        ({"source": {"type": "http", "url": "http://127.0.0.1:9/x", "breaker": {"mincalls": 3}}},
         r"source.breaker: unknown key 'mincalls' \(did you mean 'min_calls'\?\)"),
        ({"source": {"type": "http", "url": "http://127.0.0.1:9/x", "breaker": {"min_calls": 0}}},
         r"source.breaker: BreakerPolicy min_calls=0 is out of range"),
        ({"destination": {"type": "duckdb", "path": "x", "table": "t",
                          "breaker": {"open_s": "fast"}}},
         r"destination.breaker.open_s must be a number, not a str"),
        ({"schema": "evolv"}, r"unknown schema policy 'evolv'; use one of: evolve, freeze"),
        ({"max_replays": 0}, r"max_replays must be a whole number >= 1"),
        ({"contract": {"columns": {"id": {"type": "bigint", "nulable": False}}}},
         r"unknown key 'nulable' \(did you mean 'nullable'\?\)"),
        ({"checks": [{"check": "unique_keys", "columns": ["id"]}]}, r"unique_key"),
    ],
)
def test_each_mistake_is_named(tmp_path: Path, change: dict[str, object], message: str) -> None:
    """A wrong key or value raises ConfigError naming it and what to do."""
    with pytest.raises(ConfigError, match=message):
        load(write_pipeline(tmp_path / "p.yaml", **(BASE | change)))


def test_contract_schema_checks_and_replays_come_from_the_file(tmp_path: Path) -> None:
    """The data-contract keys build the pipeline's contract, drift policy, checks and guard."""
    spec = load(write_pipeline(
        tmp_path / "p.yaml", **BASE, schema="freeze", max_replays=5,
        contract={"columns": {"id": {"type": "bigint", "nullable": False},
                              "amount": {"type": "double", "min": 0}}, "unique": ["id"]},
        checks=[{"check": "null_rate", "column": "amount", "max_rate": 0.1, "severity": "warn"}],
    ))
    pipeline = spec.pipeline
    assert (pipeline.schema, pipeline.max_replays) == ("freeze", 5)
    assert pipeline.contract is not None
    assert pipeline.contract.to_spec()["unique"] == ["id"]
    [check] = pipeline.checks
    assert (check.name, check.blocking) == ("null_rate(amount)", False)


def test_unparseable_yaml_gives_the_line(tmp_path: Path) -> None:
    """Broken YAML says where it broke."""
    path = tmp_path / "p.yaml"
    path.write_text("name: x\nsource: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load(path)


def test_a_missing_pipeline_file_is_named(tmp_path: Path) -> None:
    """A path that does not exist is reported as such."""
    with pytest.raises(ConfigError, match="pipeline file not found"):
        load(tmp_path / "missing.yaml")


def test_an_http_source_is_built_with_its_pagination_and_cursor(tmp_path: Path) -> None:
    """The http source's nested settings reach the source."""
    spec = load(write_pipeline(tmp_path / "p.yaml", **BASE | {"source": {
        "type": "http", "url": "http://127.0.0.1:1/orders", "records_path": "data",
        "pagination": {"kind": "cursor", "cursor_path": "next"},
        "incremental": {"field": "updated_at", "param": "since"},
        "retry": {"attempts": 2}}}))
    source = spec.pipeline.source
    assert isinstance(source, HttpSource)
    assert (source.pagination.kind, source.incremental_field, source.retry.attempts) == (
        "cursor", "updated_at", 2)
