"""The dashboard of ``mendflow serve`` in headless Chromium (Debian's, driven by Playwright).

A real service on 127.0.0.1 (``create_app`` over a real Control, under uvicorn) serves two
pipelines declared in YAML with a SQLite state store: ``orders`` (files into DuckDB, a contract
``amount >= 0`` that sets one record aside) and ``orders-api`` (an HTTP source whose second request
gets a 503: a real incident in the ledger, retried and healed). Every page is opened and
screenshotted to ``test-artifacts/dashboard/<page>.png``; the dead letter's replay is refused
without a token and loads the row with one. Page rendering with odd and hostile values is checked
without a browser, through FastAPI's test client.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from mendflow import config
from mendflow.deadletter import DeadLetter, Filter, store_for
from mendflow.demo._api import OrdersApi
from mendflow.exceptions import DestinationUnavailable
from mendflow.remediation.supervisor import run_healing
from mendflow.server import dashboard
from mendflow.server.catalog import Catalog
from mendflow.server.control import Control
from mendflow.state.store import StateStore
from tests._service import binary, serve_app, unavailable
from tests.conftest import write_pipeline

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
TOKEN = "dashboard-test-token-0123456789"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
#: One negative amount among three orders: the contract sets it aside.
ORDERS = [{"id": 1, "amount": 10.5, "note": "first"},
          {"id": 2, "amount": -5.0, "note": "refund <b>not</b> allowed"},
          {"id": 3, "amount": 20.0, "note": "third"}]
PAGES = {"pipelines": "/ui/", "runs": "/ui/runs", "incidents": "/ui/incidents",
         "dead-letters": "/ui/dead-letters?pipeline=orders", "slo": "/ui/slo"}


@dataclasses.dataclass
class Service:
    """The served world: its folder, state store, control and the orders pipeline's file."""

    folder: Path
    store: StateStore
    control: Control
    orders_yaml: Path

    def dead_letters(self) -> list[DeadLetter]:
        """The orders pipeline's dead letters, read through its destination."""
        destination = config.load(self.orders_yaml).pipeline.destination
        try:
            return store_for(destination).list(Filter(pipeline="orders"))
        finally:
            destination.close()

    def table_ids(self) -> list[int]:
        """Ids in the orders table."""
        con = duckdb.connect(str(self.folder / "orders.duckdb"), read_only=True)
        try:
            return [int(r[0]) for r in con.execute("SELECT id FROM orders ORDER BY id").fetchall()]
        finally:
            con.close()


def _orders_spec(folder: Path, minimum: float) -> dict[str, Any]:
    return {
        "name": "orders",
        "source": {"type": "files", "path": str(folder / "drops" / "*.jsonl")},
        "destination": {"type": "duckdb", "path": str(folder / "orders.duckdb"), "table": "orders"},
        "contract": {"columns": {"id": {"type": "bigint", "nullable": False},
                                 "amount": {"type": "double", "min": minimum}}},
        "state": f"sqlite:///{folder / 'state.db'}",
        "schedule": {"every_s": 3600},
        "freshness_s": 3600,
    }


def _api_spec(folder: Path, url: str) -> dict[str, Any]:
    return {
        "name": "orders-api",
        "source": {
            "type": "http", "url": f"{url}/orders", "records_path": "data",
            "pagination": {"kind": "cursor", "cursor_param": "cursor",
                           "cursor_path": "next_cursor"},
            "incremental": {"field": "updated_at", "param": "updated_since"},
            "params": {"limit": "100"}, "timeout_s": 5,
            "retry": {"attempts": 3, "base_s": 0.001, "cap_s": 0.01},
        },
        "destination": {"type": "duckdb", "path": str(folder / "api.duckdb"), "table": "orders"},
        "write_mode": "merge", "primary_key": ["id"],
        "state": f"sqlite:///{folder / 'state.db'}",
        "freshness_s": 600,
    }


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """Two pipelines run once for real (one dead letter, one healed 503 incident), then the
    orders contract relaxed so that the dead letter can be replayed."""
    folder = tmp_path / "pipelines"
    (folder / "drops").mkdir(parents=True)
    (folder / "drops" / "a.jsonl").write_text("".join(json.dumps(o) + "\n" for o in ORDERS))
    orders_yaml = write_pipeline(folder / "orders.yaml", **_orders_spec(folder, 0))
    store = StateStore(f"sqlite:///{folder / 'state.db'}")
    try:
        spec = config.load(orders_yaml)
        spec.pipeline.run(state=store)
        spec.pipeline.destination.close()
        with OrdersApi(orders=150, faults={2: "503"}) as api:
            api_spec = config.load(write_pipeline(folder / "api.yaml",
                                                  **_api_spec(folder, api.url)))
            run_healing(api_spec.pipeline, store=store, healing=api_spec.healing)
            api_spec.pipeline.destination.close()
        write_pipeline(orders_yaml, **_orders_spec(folder, -100))
        control = Control(store, Catalog.load([folder]))
        yield Service(folder, store, control, orders_yaml)
    finally:
        store.close()


def _chromium() -> str:
    path = binary("chromium")
    try:
        import playwright.sync_api  # noqa: F401  only its presence is checked here
    except ImportError:
        unavailable("the python package playwright is not installed: pip install playwright")
    return path


def test_dashboard_pages_show_the_service_and_replay_needs_the_token(service: Service) -> None:
    """In Chromium, every page shows the pipelines, the healed 503 incident with its retry and
    the dead letter; replay without a token is refused (the letter stays), with the token it
    loads the row into the table and empties the store, and "run now" queues a job; each page
    is screenshotted."""
    chromium = _chromium()
    from playwright.sync_api import expect, sync_playwright

    from mendflow.server.app import create_app

    [letter] = service.dead_letters()
    assert service.table_ids() == [1, 3]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    app = create_app(service.control, token=TOKEN)
    with serve_app(app) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
                                    timeout=20_000)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.set_default_timeout(10_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            failed: list[str] = []
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}")
                    if r.status >= 400 else None)

            page.goto(base + PAGES["pipelines"])
            table = page.locator("main table")
            expect(table).to_contain_text("orders-api")
            expect(page.locator("tr[data-pipeline='orders'] th")).to_have_text("orders")
            expect(page.locator("tr[data-pipeline='orders'] button")).to_have_text("Run now")
            expect(page.locator("tr[data-pipeline='orders']")).to_contain_text("every 3600s")
            _shoot(page, "pipelines")

            page.goto(base + PAGES["runs"])
            expect(page.locator("main table tbody tr")).to_have_count(2)
            expect(page.locator("main table")).to_contain_text("succeeded")
            _shoot(page, "runs")

            page.goto(base + PAGES["incidents"])
            expect(page.locator("svg[role='img'] rect.span.st-healed")).to_have_count(1)
            incident = page.locator("section.incident")
            expect(incident).to_have_count(1)
            expect(incident.locator(".fclass")).to_have_text("transient")
            expect(incident).to_contain_text("orders-api")
            expect(incident.locator("th.action").first).to_have_text("retry")
            expect(incident.locator("tbody tr").last).to_contain_text("succeeded")
            _shoot(page, "incidents")

            page.goto(base + PAGES["slo"])
            expect(page.locator("main svg[role='img']")).to_have_count(3)
            expect(page.locator("main table")).to_contain_text("orders-api")
            _shoot(page, "slo")

            page.goto(base + PAGES["dead-letters"])
            row = page.locator(f"tr[data-id='{letter.id}']")
            expect(row.locator(".reason")).to_have_text(letter.reason)
            expect(row.locator("pre.record")).to_contain_text("refund <b>not</b> allowed")
            _shoot(page, "dead-letters")

            row.get_by_role("button", name="Replay").click()
            expect(page.locator("#status")).to_contain_text("refused: 401")
            _shoot(page, "dead-letters-refused")
            assert [d.id for d in service.dead_letters()] == [letter.id]
            assert service.table_ids() == [1, 3]

            page.get_by_label("API token").fill(TOKEN)
            page.get_by_role("button", name="Save").click()
            expect(page.locator("#token-state")).to_have_text("token set")
            page.locator(f"tr[data-id='{letter.id}']").get_by_role("button",
                                                                    name="Replay").click()
            expect(page.locator("#status")).to_contain_text("replayed: 1 loaded")
            expect(page.locator("main")).to_contain_text("No dead letters")
            expect(page.locator("#status")).to_contain_text("replayed: 1 loaded")
            _shoot(page, "dead-letters-replayed")

            page.goto(base + PAGES["pipelines"])
            page.locator("tr[data-pipeline='orders']").get_by_role("button",
                                                                    name="Run now").click()
            expect(page.locator("#status")).to_contain_text("queued: a run of orders")
            assert TOKEN not in page.content()
            assert errors == [], errors
            assert failed == [f"401 {base}/api/pipelines/orders/dead-letters/replay"], failed
        finally:
            browser.close()
    assert service.dead_letters() == []
    assert service.table_ids() == [1, 2, 3]
    runs = [(j.pipeline, j.status) for j in service.control.job_list() if j.kind != "replay"]
    assert runs == [("orders", "queued")]


def _shoot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


# -- rendering without a browser ------------------------------------------------------------------


class _Catalog:
    def names(self) -> list[str]:
        return ["<script>alert(1)</script>", "plain"]


class _Clock:
    def now(self) -> float:
        return 1_800_000_000.0


class _Control:
    """A stand-in Control returning hostile text and absent values in every field shown."""

    catalog = _Catalog()
    clock = _Clock()
    evil = "<script>alert(1)</script>"

    def pipelines(self) -> list[dict[str, Any]]:
        return [{"name": self.evil, "health": "failing", "schedule": self.evil,
                 "freshness_lag_s": None, "freshness_s": None, "paused": True,
                 "paused_reason": self.evil, "open_incidents": 3, "last_run": None},
                {"name": "plain"}]

    def runs(self, *, pipeline: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return [{"run_id": self.evil, "pipeline": self.evil, "status": "failed",
                 "started_at": 1_799_999_000.0, "error": self.evil, "error_type": self.evil}]

    def incidents(self, *, pipeline: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return [{"incident_id": self.evil, "pipeline": self.evil, "failure_class": self.evil,
                 "status": "open", "detected_at": 1_799_999_000.0, "recovered_at": None,
                 "dependency": self.evil, "actions": [{"action": self.evil, "outcome": "failed",
                                                       "detail": self.evil, "at": None}]},
                {"incident_id": "x", "detected_at": None}]

    def dead_letters(self, pipeline: str, *, limit: int = 100,
                     offset: int = 0) -> list[dict[str, Any]]:
        if pipeline == "plain" and offset:
            raise DestinationUnavailable(
                "postgresql://u:hunter2@db/w is locked by another process; try again.")
        return [{"id": 7, "batch_id": self.evil, "stage": self.evil, "reason": self.evil,
                 "checks": [{"check": self.evil, "column": self.evil, "message": self.evil}],
                 "record": self.evil, "attempts": 1}]

    def service_levels(self) -> list[dict[str, Any]]:
        return [{"pipeline": self.evil, "availability": None, "mttr_s": None,
                 "auto_heal_rate": None}, {"pipeline": "plain", "availability": 0.5,
                                           "mttr_s": 90.0, "auto_heal_rate": 1.0}]


@pytest.fixture
def client() -> TestClient:
    """The dashboard router alone, over the hostile stand-in Control."""
    app = FastAPI()
    app.state.control = _Control()
    app.include_router(dashboard.router)
    return TestClient(app)


@pytest.mark.parametrize("path", ["/ui/", "/ui/runs", "/ui/incidents", "/ui/slo",
                                  "/ui/dead-letters", "/ui/dead-letters?pipeline=plain",
                                  "/ui/runs?pipeline=plain", "/ui/incidents?pipeline=plain"])
def test_pages_escape_every_value_and_survive_absent_ones(client: TestClient, path: str) -> None:
    """Every page renders (200) with markup in every text field escaped, never executed, and
    with missing or null fields shown as dashes; pages hold themselves to their own origin."""
    response = client.get(path)
    assert response.status_code == 200
    assert "<script>alert" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "http://" not in response.text.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_unknown_pipeline_and_static_names_are_404_pages(client: TestClient) -> None:
    """A pipeline that is not served, or a static file not shipped, answers a 404 page naming
    it; the static files themselves are served with their types."""
    for path in ("/ui/dead-letters?pipeline=nope", "/ui/runs?pipeline=nope",
                 "/ui/static/../dashboard.py", "/ui/static/secret.txt"):
        response = client.get(path)
        assert response.status_code == 404, path
    assert "nope" in client.get("/ui/incidents?pipeline=nope").text
    css = client.get("/ui/static/dashboard.css")
    assert (css.status_code, css.headers["content-type"]) == (200, "text/css; charset=utf-8")
    assert "Bearer" in client.get("/ui/static/dashboard.js").text


def test_a_dead_letter_store_that_cannot_be_read_is_a_page_not_a_crash(
    client: TestClient,
) -> None:
    """A destination that is locked or down shows the error on the dead-letter page (503, any
    password masked) instead of failing the request."""
    response = client.get("/ui/dead-letters?pipeline=plain&offset=5")
    assert response.status_code == 503
    assert "could not be read" in response.text
    assert "is locked by another process" in response.text
    assert "hunter2" not in response.text


def test_timeline_spans_incidents_from_detection_to_recovery_or_now() -> None:
    """The timeline puts the oldest incident on top, its bar from detection to recovery; an
    open incident runs to now; the axis spans the first detection to now."""
    now = 1000.0
    chart = dashboard.timeline([
        {"incident_id": "b", "status": "open", "detected_at": 800.0, "recovered_at": None},
        {"incident_id": "a", "status": "healed", "detected_at": 0.0, "recovered_at": 200.0},
    ], now=now)
    assert chart is not None
    healed, open_ = chart.bars
    assert (healed.kind, open_.kind) == ("healed", "open")
    assert healed.y < open_.y
    assert healed.x == dashboard.LABEL_W
    assert healed.width == pytest.approx(dashboard.PLOT_W * 0.2)
    assert open_.x + open_.width == pytest.approx(dashboard.LABEL_W + dashboard.PLOT_W)
    assert [x for x, _ in chart.ticks] == [dashboard.LABEL_W, dashboard.LABEL_W + 280.0,
                                           dashboard.LABEL_W + 560.0]
    assert dashboard.timeline([], now=now) is None


def test_formatting_of_times_durations_and_shares() -> None:
    """Times read as epoch seconds or ISO text, durations and shares print short; absent values
    print as a dash or n/a."""
    assert dashboard.when(0) == "1970-01-01 00:00:00Z"
    assert dashboard.when("2026-01-02T03:04:05+00:00") == "2026-01-02 03:04:05Z"
    assert dashboard.when(None) == "—"
    assert [dashboard.duration(v) for v in (0.25, 42, 90, 7200, None)] == [
        "250 ms", "42 s", "1.5 min", "2.0 h", "—"]
    assert (dashboard.percent(0.9876), dashboard.percent(None)) == ("98.8 %", "n/a")
    assert dashboard.schedule({"every_s": 300}) == "every 5.0 min"
    assert dashboard.schedule(None) == "manual"


def test_charts_draw_one_bar_per_pipeline_and_one_span_per_incident(client: TestClient) -> None:
    """The SLO page draws one bar per pipeline in each of its three charts, the incidents page
    one span per incident that has a detection time."""
    slo = client.get("/ui/slo").text
    assert slo.count('class="bar"') == 6
    incidents = client.get("/ui/incidents").text
    assert incidents.count('class="span st-open"') == 1
