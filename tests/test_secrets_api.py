"""Secrets stay out of the service's output: no API answer and no log line shows a database
password (destination or state store) or the API token."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from mendflow import logs
from mendflow.exceptions import TransientError
from mendflow.remediation.diagnosis import Diagnosis, FailureClass
from mendflow.server.app import create_app
from mendflow.server.catalog import Catalog
from mendflow.server.control import Control
from tests.test_control import Served, open_breaker, served
from tests.test_state_secrets import SECRET, secret_url  # noqa: F401 - a fixture

TOKEN = "api-T0KEN-never-shown"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LEAKS = ("s3cret", quote(SECRET, safe=""), TOKEN, "T0KEN")
UNREACHABLE = f"postgresql://loader:{quote(SECRET, safe='')}@127.0.0.1:1/warehouse"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Every log line of the mendflow and uvicorn loggers as the service writes them (JSON,
    ``logs.configure``), the previous logging setup restored after."""
    names = ("mendflow", "uvicorn")
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level) for n in names}
    stream = io.StringIO()
    logs.configure(json=True, level="DEBUG", stream=stream, loggers=names)
    logs.add_secret(TOKEN)
    yield stream
    for name, (handlers, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)


def _leaky_setup(tmp_path: Path, state_url: str | None = None) -> Served:
    """A served folder with a pipeline whose destination URL holds the password and cannot be
    reached (its run tried, and retried), and an incident quoting the URL."""
    setup = served(tmp_path, state_url=state_url)
    (setup.folder / "warehouse.yaml").write_text(
        "name: warehouse\n"
        f"source: {{type: files, path: '{tmp_path / 'drops' / '*.jsonl'}'}}\n"
        f"destination: {{type: postgres, url: '{UNREACHABLE}?connect_timeout=1', "
        "table: orders}\n",
        encoding="utf-8",
    )
    catalog = Catalog.load([setup.folder])
    setup.control = Control(setup.store, catalog, clock=setup.clock)
    pipeline = catalog.get("warehouse").pipeline
    with pytest.raises(TransientError):  # cannot connect: its incident is what counts
        pipeline.run(state=setup.store, clock=setup.clock)
    leaky = Diagnosis(FailureClass.DEPENDENCY_DOWN, UNREACHABLE, "DestinationUnavailable", None,
                      f"cannot connect to {UNREACHABLE} (password={SECRET})")
    setup.control.ledger.open(pipeline="warehouse", run_id="", diagnosis=leaky,
                              at=setup.clock.now())
    open_breaker(setup.store, "postgres:" + UNREACHABLE.replace(quote(SECRET, safe=""), "***"))
    return setup


def _everything(client: TestClient, control: Any) -> list[Any]:
    """Every GET of the API and the actions that touch the leaky destination."""
    incidents = control.incidents(pipeline="warehouse")
    assert len(incidents) == 2  # the run's own (retries) and the one quoting the URL
    [run] = control.runs(pipeline="orders")
    alert = {
        "status": "firing", "fingerprint": "leak", "startsAt": "2026-11-21T10:00:00Z",
        "labels": {"alertname": "MendflowPipelineStale", "pipeline": "warehouse",
                   "dsn": UNREACHABLE},
        "annotations": {"summary": f"stale, see {UNREACHABLE}"},
    }
    responses = [client.get(path) for path in (
        "/api/pipelines", "/api/pipelines/warehouse", "/api/runs",
        f"/api/runs/{run['run_id']}/events", "/api/incidents",
        *(f"/api/incidents/{i['incident_id']}" for i in incidents),
        "/api/slo", "/api/jobs", "/api/breakers",
        "/api/pipelines/warehouse/dead-letters", "/api/pipelines/orders/dead-letters",
        "/metrics", "/readyz", "/openapi.json",
    )]
    responses += [
        client.post("/api/pipelines/warehouse/dead-letters/replay", headers=AUTH),
        client.post("/api/pipelines/warehouse/run", headers=AUTH),
        client.post("/api/pipelines/warehouse/run", headers={"Authorization": "Bearer x"}),
        client.post("/api/pipelines/warehouse/run"),
        client.post("/hooks/alertmanager", headers=AUTH, json={
            "version": "4", "status": "firing", "receiver": "mendflow", "alerts": [alert]}),
        client.get("/api/incidents", params={"pipeline": "warehouse"}),
    ]
    return responses


def _assert_clean(responses: list[Any], lines: str, caplog: pytest.LogCaptureFixture) -> None:
    for response in responses:
        assert response.status_code < 500 or response.status_code == 503, response.text
        for leak in LEAKS:
            assert leak not in response.text, response.request.url
            assert leak not in str(response.headers)
    assert '"incident_id"' in lines  # the webhook logged its alert: the check has lines to read
    records = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    for leak in LEAKS:
        assert leak not in lines
        assert leak not in records


def test_no_password_or_token_in_answers_or_logs(
    tmp_path: Path, log_lines: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    """A destination URL with a password that failed a run, an incident and an alert quoting
    it: every answer and every log line has it masked, and the token never shows."""
    caplog.set_level(logging.DEBUG)
    setup = _leaky_setup(tmp_path)
    try:
        with TestClient(create_app(setup.control, token=TOKEN)) as client:
            responses = _everything(client, setup.control)
        assert all("***" in i["evidence"]["message"]
                   for i in setup.control.incidents(pipeline="warehouse"))
        unreachable = responses[15]  # the replay: the destination cannot be reached
        assert unreachable.status_code == 503
        assert "***" in unreachable.json()["error"]
        _assert_clean(responses, log_lines.getvalue(), caplog)
    finally:
        setup.store.close()


def test_a_password_protected_state_store_never_shows(
    tmp_path: Path, secret_url: str, log_lines: io.StringIO,  # noqa: F811 - the fixture
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the state store on PostgreSQL behind a password, no answer or log line shows it."""
    caplog.set_level(logging.DEBUG)
    setup = _leaky_setup(tmp_path, state_url=secret_url)
    try:
        with TestClient(create_app(setup.control, token=TOKEN)) as client:
            responses = _everything(client, setup.control)
        assert client is not None
        pipelines = responses[0].json()
        assert {p["name"] for p in pipelines} == {"idle", "orders", "warehouse"}
        _assert_clean(responses, log_lines.getvalue(), caplog)
    finally:
        setup.store.close()
