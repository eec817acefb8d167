"""The Alertmanager webhook: alerts become healing actions on ledger incidents, once each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from mendflow.server.app import create_app
from mendflow.state.schema import alerts
from tests.test_control import START, Served, actions, open_breaker, served

TOKEN = "hook-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOOK = "/hooks/alertmanager"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Served]:
    """The served folder (``orders`` run once, ``idle`` never run)."""
    setup = served(tmp_path)
    yield setup
    setup.store.close()


@pytest.fixture
def client(env: Served) -> Iterator[TestClient]:
    """A client of the app over ``env``."""
    with TestClient(create_app(env.control, token=TOKEN)) as test_client:
        yield test_client


def alert(
    name: str = "MendflowPipelineStale", *, status: str = "firing", fingerprint: str = "f1",
    starts_at: str = "2026-11-21T10:00:00Z", **labels: str,
) -> dict[str, Any]:
    """One alert as Alertmanager sends it."""
    return {
        "status": status,
        "labels": {"alertname": name, "severity": "warning", **labels},
        "annotations": {"summary": f"{name} for {labels.get('pipeline', '?')}"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-21T10:05:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    }


def notification(*items: dict[str, Any]) -> dict[str, Any]:
    """An Alertmanager webhook payload (version 4) carrying ``items``."""
    status = "firing" if any(i["status"] == "firing" for i in items) else "resolved"
    return {
        "version": "4", "groupKey": "{}:{alertname=\"x\"}", "truncatedAlerts": 0,
        "status": status, "receiver": "mendflow", "groupLabels": {},
        "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
        "alerts": list(items),
    }


def post(client: TestClient, *items: dict[str, Any]) -> list[dict[str, Any]]:
    """Post a notification; the per-alert results."""
    response = client.post(HOOK, json=notification(*items), headers=AUTH)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def test_firing_opens_an_incident_and_queues_a_rerun_carrying_it(
    env: Served, client: TestClient
) -> None:
    """A stale alert opens a stale incident, records the alert, and queues a rerun whose job
    carries the incident (so the worker verifies and heals it)."""
    [result] = post(client, alert(pipeline="orders"))
    assert (result["action"], result["outcome"], result["new"]) == ("rerun", "queued", True)
    incident = env.control.incident(result["incident_id"])
    assert (incident["pipeline"], incident["failure_class"], incident["dependency"]) == (
        "orders", "stale", "alert:MendflowPipelineStale")
    assert actions(env.control, result["incident_id"]) == [
        ("alert", "received"), ("rerun", "queued")]
    assert "MendflowPipelineStale" in incident["actions"][0]["detail"]
    [job] = env.control.job_list(pipeline="orders")
    assert (job.reason, job.incident_id, job.status) == ("alert", result["incident_id"], "queued")


def test_a_repeated_notification_does_nothing_new(env: Served, client: TestClient) -> None:
    """The same alert (fingerprint and start) firing again: no new incident, job or action."""
    [first] = post(client, alert(pipeline="orders"))
    [again] = post(client, alert(pipeline="orders"))
    assert (again["new"], again["incident_id"], again["outcome"]) == (
        False, first["incident_id"], "queued")
    assert len(env.control.incidents()) == 1
    assert len(env.control.job_list()) == 1
    assert len(actions(env.control, first["incident_id"])) == 2


def test_resolved_records_the_end_once_and_heals(env: Served, client: TestClient) -> None:
    """Resolved: resolved_at set, an alert/resolved action, the incident healed; a repeat of
    the resolution adds nothing."""
    [fired] = post(client, alert(pipeline="orders"))
    env.clock.advance(120)
    [resolved] = post(client, alert(pipeline="orders", status="resolved"))
    assert (resolved["new"], resolved["incident_id"]) == (True, fired["incident_id"])
    incident = env.control.incident(fired["incident_id"])
    assert (incident["status"], incident["recovered_at"]) == ("healed", START + 120)
    assert actions(env.control, fired["incident_id"])[-1] == ("alert", "resolved")
    with env.store.engine.connect() as con:
        row = con.execute(sa.select(alerts)).one()
    assert (row.status, row.resolved_at, row.action) == ("resolved", START + 120, "rerun")
    [repeat] = post(client, alert(pipeline="orders", status="resolved"))
    assert repeat["new"] is False
    assert len(actions(env.control, fired["incident_id"])) == 3


def test_maintenance_window_suppresses_the_action(env: Served, client: TestClient) -> None:
    """Inside a maintenance window the incident and alert are recorded, the action is
    recorded suppressed, and no job is queued."""
    env.control.add_maintenance("orders", starts_at=START - 10, ends_at=START + 10,
                                reason="upgrade")
    [result] = post(client, alert(pipeline="orders"))
    assert result["outcome"] == "suppressed"
    assert actions(env.control, result["incident_id"]) == [
        ("alert", "received"), ("rerun", "suppressed")]
    assert env.control.job_list() == []


def test_paused_pipeline_suppresses_the_action(env: Served, client: TestClient) -> None:
    """A paused pipeline's alert is recorded, its action suppressed with the pause reason."""
    env.control.pause("orders", reason="upstream broken")
    [result] = post(client, alert("MendflowPipelineErrorRate", pipeline="orders"))
    assert result["outcome"] == "suppressed"
    incident = env.control.incident(result["incident_id"])
    assert incident["failure_class"] == "transient"
    assert "upstream broken" in incident["actions"][-1]["detail"]
    assert env.control.job_list() == []


def test_breaker_alert_probes_and_label_overrides_the_action(
    env: Served, client: TestClient
) -> None:
    """The breaker alert probes its dependency's breaker (dependency_down incident); a
    mendflow_action label picks another action (reset, pause, none)."""
    open_breaker(env.store, "orders-api")
    probe, reset, pause, none = post(
        client,
        alert("MendflowBreakerOpenTooLong", fingerprint="b1", dependency="orders-api"),
        alert("MendflowBreakerOpenTooLong", fingerprint="b2", dependency="orders-api",
              mendflow_action="reset"),
        alert("Custom", fingerprint="p1", pipeline="orders", mendflow_action="pause"),
        alert("MendflowDeadLettersGrowing", fingerprint="d1", pipeline="orders"),
    )
    assert (probe["action"], probe["outcome"]) == ("probe", "half_open")
    incident = env.control.incident(probe["incident_id"])
    assert (incident["failure_class"], incident["dependency"]) == ("dependency_down",
                                                                   "orders-api")
    assert (reset["action"], reset["outcome"]) == ("reset", "closed")
    assert actions(env.control, reset["incident_id"])[-1] == ("reset_breaker", "closed")
    assert [b["state"] for b in env.control.breakers()] == ["closed"]
    assert (pause["action"], pause["outcome"]) == ("pause", "paused")
    assert env.control.pipeline("orders")["paused"]
    assert (none["action"], none["outcome"]) == ("none", "recorded")
    assert env.control.incident(none["incident_id"])["failure_class"] == "bad_data"
    assert env.control.job_list() == []


def test_unknown_pipeline_or_breaker_is_recorded_and_answered_200(
    env: Served, client: TestClient
) -> None:
    """An alert for a pipeline not served, or a breaker never seen, is answered 200 with its
    outcome (Alertmanager would retry anything else forever)."""
    unknown, breaker = post(
        client, alert(pipeline="ghost", fingerprint="g1"),
        alert("MendflowBreakerOpenTooLong", fingerprint="g2", dependency="never-seen"),
    )
    assert (unknown["outcome"], unknown["incident_id"]) == ("unknown_pipeline", None)
    assert breaker["outcome"] == "not_found"
    assert actions(env.control, breaker["incident_id"])[-1] == ("probe", "not_found")
    with env.store.engine.connect() as con:
        outcomes = dict(con.execute(sa.select(alerts.c.fingerprint, alerts.c.outcome)).all())
    assert outcomes == {"g1": "unknown_pipeline", "g2": "not_found"}


@pytest.mark.parametrize("body", [
    {"alerts": []},
    {"version": "4", "status": "firing", "receiver": "r", "alerts": [{"status": "firing"}]},
    {"version": "4", "status": "weird", "receiver": "r", "alerts": []},
    {"version": "4", "status": "firing", "receiver": "r",
     "alerts": [{**alert(), "labels": {"alertname": 5}}]},
    {"version": "4", "status": "firing", "receiver": "r",
     "alerts": [{**alert(), "fingerprint": "x" * 65}]},
    [1, 2, 3],
])
def test_a_malformed_payload_is_422(env: Served, client: TestClient, body: Any) -> None:
    """A payload that is not Alertmanager's: 422 JSON naming the problem, nothing recorded."""
    response = client.post(HOOK, json=body, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"].startswith("invalid request")
    assert env.control.incidents() == []


def test_the_webhook_needs_the_token(env: Served, client: TestClient) -> None:
    """Without the bearer token (or with a wrong one) the webhook is 401 and acts on nothing."""
    payload = notification(alert(pipeline="orders"))
    assert client.post(HOOK, json=payload).status_code == 401
    wrong = client.post(HOOK, json=payload, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert env.control.incidents() == []
    assert env.control.job_list() == []
