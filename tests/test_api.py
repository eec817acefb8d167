"""The JSON API over a populated store: reads, token-guarded actions, error statuses, and the
service itself (uvicorn on a real socket, ``mendflow serve`` as a process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from mendflow.server.app import create_app
from tests._service import free_port, serve_app, wait_until
from tests.test_control import BAD_EVERY, ORDERS, START, Served, open_breaker, open_incident, served

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Served]:
    """The served folder (``orders`` run once with 5 dead letters, ``idle`` never run)."""
    setup = served(tmp_path)
    yield setup
    setup.store.close()


@pytest.fixture
def client(env: Served) -> Iterator[TestClient]:
    """A client of the app over ``env``, the token configured."""
    with TestClient(create_app(env.control, token=TOKEN)) as test_client:
        yield test_client


def _json(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def test_reads_return_the_stores_data(env: Served, client: TestClient) -> None:
    """Every GET answers from the populated store: pipelines, runs, events, incidents, dead
    letters, SLOs, jobs and breakers."""
    incident_id = open_incident(env.control)
    open_breaker(env.store, "orders-api")
    pipelines = _json(client.get("/api/pipelines"))
    assert [p["name"] for p in pipelines] == ["idle", "orders"]
    orders = _json(client.get("/api/pipelines/orders"))
    assert (orders["health"], orders["open_incidents"]) == ("degraded", 1)
    [run] = _json(client.get("/api/runs", params={"pipeline": "orders", "limit": 5}))
    assert (run["run_id"], run["rows_read"]) == (env.run_id, ORDERS)
    events = _json(client.get(f"/api/runs/{env.run_id}/events"))
    assert events[0]["kind"] == "run.started"
    [incident] = _json(client.get("/api/incidents", params={"pipeline": "orders"}))
    assert incident["incident_id"] == incident_id
    one = _json(client.get(f"/api/incidents/{incident_id}"))
    assert (one["failure_class"], one["actions"]) == ("stale", [])
    letters = _json(client.get("/api/pipelines/orders/dead-letters", params={"limit": 3}))
    assert len(letters) == 3
    assert '"n/a"' in letters[0]["record"]
    [slo] = _json(client.get("/api/slo"))
    assert (slo["pipeline"], slo["incidents"]) == ("orders", 1)
    assert _json(client.get("/api/jobs")) == []
    [breaker] = _json(client.get("/api/breakers"))
    assert (breaker["dependency"], breaker["state"]) == ("orders-api", "open")
    assert _json(client.get("/healthz")) == {"status": "ok"}
    assert _json(client.get("/readyz")) == {"status": "ready"}


def test_metrics_health_and_root(client: TestClient) -> None:
    """/metrics is Prometheus text from the store; / sends people to the dashboard."""
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'mendflow_runs_total{outcome="succeeded",pipeline="orders"} 1.0' in metrics.text
    root = client.get("/", follow_redirects=False)
    assert (root.status_code, root.headers["location"]) == (307, "/ui/")
    schema = _json(client.get("/openapi.json"))
    assert "/hooks/alertmanager" in schema["paths"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_readyz_is_503_when_the_store_does_not_answer(env: Served, tmp_path: Path) -> None:
    """/readyz says 503 while the state store cannot be queried (and /healthz stays 200)."""
    env.control.store.engine = sa.create_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    with TestClient(create_app(env.control, token=TOKEN)) as client:
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(("headers", "why"), [
    ({}, "needs a token"),
    ({"Authorization": "Bearer wrong"}, "not valid"),
    ({"Authorization": f"Basic {TOKEN}"}, "must be 'Bearer"),
    ({"Authorization": "Bearer "}, "must be 'Bearer"),
])
def test_actions_without_a_valid_token_are_401(
    client: TestClient, env: Served, headers: dict[str, str], why: str
) -> None:
    """Every POST without the right bearer token is 401 JSON with WWW-Authenticate, whatever
    its body, and nothing is done."""
    posts = [
        ("/api/pipelines/orders/run", None), ("/api/pipelines/orders/pause", {"reason": "x"}),
        ("/api/pipelines/orders/resume", None),
        ("/api/pipelines/orders/maintenance", {"starts_at": 1, "ends_at": 2}),
        ("/api/pipelines/orders/dead-letters/replay", {}),
        ("/api/breakers/reset", {"dependency": "x"}), ("/api/breakers/probe", {"dependency": "x"}),
        ("/hooks/alertmanager", {"bad": "payload"}), ("/api/pipelines/nope/run", None),
    ]
    for path, body in posts:
        response = client.post(path, json=body, headers=headers)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert why in response.json()["error"]
        assert TOKEN not in response.text
    assert env.control.job_list() == []
    assert not env.control.pipeline("orders")["paused"]


def test_without_a_configured_token_every_action_is_refused(env: Served) -> None:
    """No token configured: POSTs are 401 saying to set MENDFLOW_API_TOKEN; GETs still work."""
    with TestClient(create_app(env.control, token=None)) as client:
        refused = client.post("/api/pipelines/orders/run", headers={"Authorization": "Bearer "})
        assert refused.status_code == 401
        assert "MENDFLOW_API_TOKEN" in refused.json()["error"]
        assert client.get("/api/pipelines").status_code == 200


def test_actions_with_the_token(env: Served, client: TestClient) -> None:
    """With the token: run queues a job (202), pause/resume, a maintenance window, replay,
    breaker probe and reset all act."""
    queued = _json(client.post("/api/pipelines/orders/run", headers=AUTH), 202)
    assert (queued["created"], queued["job"]["pipeline"], queued["job"]["status"]) == (
        True, "orders", "queued")
    again = _json(client.post("/api/pipelines/orders/run", headers=AUTH), 202)
    assert (again["created"], again["job"]["job_id"]) == (False, queued["job"]["job_id"])
    paused = _json(client.post("/api/pipelines/orders/pause", json={"reason": "upstream"},
                               headers=AUTH))
    assert paused == {"pipeline": "orders", "paused": True, "changed": True}
    assert env.control.pipeline("orders")["paused_reason"] == "upstream"
    assert _json(client.post("/api/pipelines/orders/pause", headers=AUTH))["changed"] is False
    assert _json(client.post("/api/pipelines/orders/resume", headers=AUTH))["changed"] is True
    window = _json(client.post(
        "/api/pipelines/orders/maintenance", headers=AUTH,
        json={"starts_at": START, "ends_at": START + 60, "reason": "upgrade"}), 201)
    assert (window["starts_at"], window["reason"]) == (START, "upgrade")
    assert env.control.in_maintenance("orders", at=START + 30)
    replayed = _json(client.post("/api/pipelines/orders/dead-letters/replay", headers=AUTH))
    assert (replayed["loaded"], replayed["failed"]) == (0, ORDERS // BAD_EVERY)
    first = env.control.dead_letters("orders")[0]["id"]
    some = _json(client.post("/api/pipelines/orders/dead-letters/replay", headers=AUTH,
                             json={"ids": [first]}))
    assert some["failed"] == 1
    open_breaker(env.store, "orders-api")
    probed = _json(client.post("/api/breakers/probe", json={"dependency": "orders-api"},
                               headers=AUTH))
    assert probed["state"] == "half_open"
    reset = _json(client.post("/api/breakers/reset", json={"dependency": "orders-api"},
                              headers=AUTH))
    assert (reset["previous"], reset["state"]) == ("half_open", "closed")


def test_errors_are_json_404_409_422(env: Served, client: TestClient) -> None:
    """Unknown pipeline, run, incident or breaker: 404; replay while a worker runs the
    pipeline: 409 with Retry-After; a bad body or window: 422; all JSON with an error."""
    for response in (
        client.get("/api/pipelines/nope"), client.get("/api/runs/nope/events"),
        client.get("/api/incidents/nope"), client.get("/api/pipelines/nope/dead-letters"),
        client.post("/api/pipelines/nope/run", headers=AUTH),
        client.post("/api/breakers/reset", json={"dependency": "nope"}, headers=AUTH),
        client.get("/api/no/such/route"),
    ):
        assert response.status_code == 404, response.request.url
        assert response.json()["error"]
    env.control.rerun("orders")
    assert env.control.jobs.claim("w1") is not None
    busy = client.post("/api/pipelines/orders/dead-letters/replay", headers=AUTH)
    assert busy.status_code == 409
    assert busy.headers["retry-after"]
    assert "being run by a worker" in busy.json()["error"]
    for response in (
        client.post("/api/pipelines/orders/maintenance", json={"starts_at": 5, "ends_at": 1},
                    headers=AUTH),
        client.post("/api/pipelines/orders/maintenance", json={"starts_at": "soon"},
                    headers=AUTH),
        client.post("/api/breakers/probe", content=b"{not json", headers=AUTH),
        client.get("/api/runs", params={"limit": 0}),
        client.post("/api/pipelines/orders/dead-letters/replay", json={"ids": ["x"]},
                    headers=AUTH),
    ):
        assert response.status_code == 422, response.text
        assert response.json()["error"]


def test_the_app_serves_on_a_real_socket(env: Served) -> None:
    """Under uvicorn on 127.0.0.1 the API answers reads and refuses an action without token."""
    with serve_app(create_app(env.control, token=TOKEN)) as base, httpx.Client(
        base_url=base, timeout=10
    ) as http:
        assert http.get("/api/pipelines/orders").json()["name"] == "orders"
        assert http.post("/api/pipelines/orders/run").status_code == 401
        assert http.post("/api/pipelines/orders/run", headers=AUTH).status_code == 202


def test_mendflow_serve_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`mendflow serve` answers on its port with the token from --token-file, its worker runs
    a job asked through the API, and SIGTERM stops it cleanly (exit 0)."""
    setup = served(tmp_path, run=False)
    setup.store.close()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MENDFLOW_API_TOKEN"}
    child = subprocess.Popen(
        [sys.executable, "-m", "mendflow", "serve", str(setup.folder), "--port", str(port),
         "--state", f"sqlite:///{tmp_path / 'state.db'}", "--token-file", str(token_file),
         "--workers", "1", "--lease-timeout-s", "10"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{base}/healthz", timeout=2).status_code == 200,
                   30, what="mendflow serve to answer /healthz")
        paused = httpx.post(f"{base}/api/pipelines/idle/pause", headers=AUTH, timeout=10)
        assert paused.json()["paused"] is True
        queued = httpx.post(f"{base}/api/pipelines/orders/run", headers=AUTH, timeout=10)
        assert queued.status_code == 202
        job_id = queued.json()["job"]["job_id"]

        def done() -> bool:
            jobs = httpx.get(f"{base}/api/jobs", params={"pipeline": "orders"}, timeout=5)
            return any(j["job_id"] == job_id and j["status"] == "succeeded"
                       for j in jobs.json())

        wait_until(done, 60, what="the worker to run the job")
        [run] = httpx.get(f"{base}/api/runs", params={"pipeline": "orders"}, timeout=5).json()
        assert (run["status"], run["rows_read"]) == ("succeeded", ORDERS)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=30)
        assert child.returncode == 0, err
        assert TOKEN not in err
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=10)


def test_mendflow_serve_refuses_bad_config(tmp_path: Path) -> None:
    """A missing pipeline folder or an empty token file: one clear message, exit 2."""
    missing = subprocess.run(
        [sys.executable, "-m", "mendflow", "serve", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert missing.returncode == 2
    assert "not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    setup = served(tmp_path, run=False)
    setup.store.close()
    (tmp_path / "empty").write_text("", encoding="utf-8")
    empty = subprocess.run(
        [sys.executable, "-m", "mendflow", "serve", str(setup.folder), "--token-file",
         str(tmp_path / "empty"), "--state", f"sqlite:///{tmp_path / 'state.db'}"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert empty.returncode == 2
    assert "token file" in empty.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_nul_characters_are_422_on_every_store(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    """A NUL character in a path, a query or a JSON body is refused with 422 before any store
    sees it (PostgreSQL cannot compare such text): never a 5xx."""
    state = request.getfixturevalue("pg_url") if backend == "postgres" else None
    setup = served(tmp_path, state_url=state, run=False)
    alert = {"status": "firing", "fingerprint": "f\u0000", "startsAt": "x",
             "labels": {"alertname": "a", "pipeline": "orders"}}
    try:
        with TestClient(create_app(setup.control, token=TOKEN)) as client:
            for response in (
                client.get("/api/runs/a%00b/events"), client.get("/api/runs?pipeline=a%00"),
                client.get("/api/incidents/a%00"), client.get("/api/jobs?pipeline=%00"),
                client.get("/ui/runs?pipeline=%00"),
                client.post("/api/breakers/reset", json={"dependency": "a\u0000"},
                            headers=AUTH),
                client.post("/api/pipelines/orders/pause", json={"reason": "a\u0000"},
                            headers=AUTH),
                client.post("/hooks/alertmanager", headers=AUTH, json={
                    "status": "firing", "receiver": "r", "alerts": [alert]}),
            ):
                assert response.status_code == 422, response.request.url
                assert "NUL" in response.json()["error"]
            assert not setup.control.pipeline("orders")["paused"]
    finally:
        setup.store.close()
