"""The service's catalog: pipelines found in folders, with their schedule, freshness and windows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mendflow import ConfigError, UnknownPipeline
from mendflow.schedule import Schedule, Window
from mendflow.server.catalog import Catalog
from tests.conftest import write_pipeline


def _spec(name: str, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "source": {"type": "files", "path": f"{name}/*.jsonl"},
        "destination": {"type": "duckdb", "path": "w.duckdb", "table": name},
        **extra,
    }


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_a_folder_yields_every_pipeline_with_its_service_keys(tmp_path: Path) -> None:
    """Each YAML file of the folder is an entry; schedule, freshness and windows are read."""
    write_pipeline(tmp_path / "a.yaml", **_spec(
        "orders", schedule={"every_s": 60}, freshness_s=300,
        maintenance=[{"cron": "0 2 * * *", "duration_s": 3600}]))
    write_pipeline(tmp_path / "b.yml", **_spec("sales", schedule={"cron": "*/5 * * * *"}))
    (tmp_path / "notes.txt").write_text("not a pipeline", encoding="utf-8")
    catalog = Catalog.load([tmp_path])
    assert catalog.names() == ["orders", "sales"]
    orders = catalog.entry("orders")
    assert orders.schedule == Schedule(every_s=60.0)
    assert orders.freshness_s == 300.0
    assert orders.maintenance == (Window(cron="0 2 * * *", duration_s=3600.0),)
    assert orders.maintenance[0].covers(_at("2026-11-21T02:30:00"))
    assert not orders.maintenance[0].covers(_at("2026-11-21T03:00:00"))
    sales = catalog.entry("sales")
    assert sales.schedule is not None
    assert sales.schedule.next_after(_at("2026-11-21T10:01:00")) == _at("2026-11-21T10:05:00")
    assert sales.freshness_s is None
    assert catalog.get("orders").pipeline.name == "orders"


def test_an_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    """Asking for a pipeline that is not served names the ones that are."""
    catalog = Catalog.load([write_pipeline(tmp_path / "a.yaml", **_spec("orders"))])
    with pytest.raises(UnknownPipeline, match=r"no pipeline named 'ordres'.*known: orders"):
        catalog.entry("ordres")


def test_two_files_with_one_name_are_refused(tmp_path: Path) -> None:
    """Two files declaring the same pipeline name are an error naming both files."""
    write_pipeline(tmp_path / "a.yaml", **_spec("orders"))
    write_pipeline(tmp_path / "b.yaml", **_spec("orders"))
    with pytest.raises(ConfigError, match=r"'orders' is declared twice, in .*a.yaml and .*b.yaml"):
        Catalog.load([tmp_path])


def test_pipelines_naming_different_state_stores_are_refused(tmp_path: Path) -> None:
    """One service has one state store: pipelines that disagree on it are an error."""
    write_pipeline(tmp_path / "a.yaml", **_spec("orders", state="sqlite:///a.db"))
    write_pipeline(tmp_path / "b.yaml", **_spec("sales", state="sqlite:///b.db"))
    with pytest.raises(ConfigError, match="different state stores"):
        Catalog.load([tmp_path]).state()
    assert Catalog.load([tmp_path / "a.yaml"]).state() == "sqlite:///a.db"


def test_a_missing_path_is_named(tmp_path: Path) -> None:
    """A folder or file that does not exist is named."""
    with pytest.raises(ConfigError, match=r"not found: .*nowhere"):
        Catalog.load([tmp_path / "nowhere"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"schedule": {"every_s": 0}}, r"schedule: schedule every_s must be > 0"),
        ({"schedule": {"every_s": 5, "cron": "* * * * *"}}, r"exactly one of every_s or cron"),
        ({"schedule": {"cron": "every minute"}}, r"not a five-field cron expression"),
        ({"schedule": {"evry_s": 5}}, r"unknown key 'evry_s'"),
        ({"freshness_s": -1}, r"freshness_s must be a number of seconds > 0"),
        ({"maintenance": {"cron": "0 2 * * *"}}, r"maintenance must be a list"),
        ({"maintenance": [{"cron": "0 2 * * *"}]}, r"duration_s must be a number of seconds"),
        ({"maintenance": [{"start": "2026-12-24", "end": "2026-12-23"}]}, r"ends before it starts"),
        ({"maintenance": [{"start": "soon", "end": "later"}]}, r"must be an ISO 8601 time"),
    ],
)
def test_bad_service_keys_are_named(
    tmp_path: Path, extra: dict[str, object], message: str
) -> None:
    """A wrong schedule, freshness or window says what is wrong and how to write it."""
    path = write_pipeline(tmp_path / "a.yaml", **_spec("orders", **extra))
    with pytest.raises(ConfigError, match=message):
        Catalog.load([path])


def test_an_absolute_window_covers_its_span_only(tmp_path: Path) -> None:
    """A start/end window covers from its start (inclusive) to its end (exclusive)."""
    path = write_pipeline(tmp_path / "a.yaml", **_spec("orders", maintenance=[
        {"start": "2026-12-24T00:00:00Z", "end": "2026-12-27T00:00:00Z"}]))
    (window,) = Catalog.load([path]).entry("orders").maintenance
    assert window.covers(_at("2026-12-24T00:00:00"))
    assert window.covers(_at("2026-12-26T23:59:59"))
    assert not window.covers(_at("2026-12-27T00:00:00"))
    assert not window.covers(_at("2026-12-23T23:59:59"))
