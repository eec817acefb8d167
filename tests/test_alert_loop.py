"""Acceptance: the Prometheus -> Alertmanager -> mendflow heal loop, with the real programs.

On 127.0.0.1, with free ports and temporary folders: ``mendflow serve`` (a real subprocess, one
worker, the API token in ``MENDFLOW_API_TOKEN``), Prometheus (Debian ``prometheus``) scraping it
every second and evaluating ``deploy/prometheus/rules.yml``, and Alertmanager (Debian
``prometheus-alertmanager``) with ``deploy/alertmanager/alertmanager.yml``, posting to
mendflow's webhook with the token read from a credentials file.

The deploy files are used as they are, except for what a test cannot wait for or must point
elsewhere: the intervals (1 s scrape and evaluation, the stale alert's ``for`` 1 s,
Alertmanager's group wait and interval 1 s), the addresses and ports, and the credentials file.

The pipeline has no schedule and ``freshness_s: 10``. It runs once, then goes stale; the alert
must fire, come back as a webhook, make mendflow re-run the pipeline, resolve once freshness has
recovered, and the resolved notification must reach mendflow, all before the pipeline goes stale
again (``freshness_s`` after the re-run: the loop takes about 5 s of that, hence 10 s, not less).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from tests._service import binary, free_port, wait_until
from tests.conftest import write_orders, write_pipeline

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
TOKEN = "e2e-token-7c1f9a"
FRESHNESS_S = 10
BUDGET_S = 58.0  # the whole test, startup to teardown
PIPELINE = "orders"


class Deadline:
    """The time left of the test's budget; each wait takes at most that."""

    def __init__(self, budget_s: float) -> None:
        self.end = time.monotonic() + budget_s

    def left(self, most: float) -> float:
        """At most ``most`` seconds, never past the end (AssertionError once it passed)."""
        remaining = self.end - time.monotonic()
        assert remaining > 0, "the test ran out of its time budget"
        return min(most, remaining)


@contextmanager
def process(argv: list[str], log: Path, *, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` with output to ``log``; terminate it (kill after 5 s) on the way out."""
    out: IO[bytes] = log.open("wb")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                            start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        out.close()


def tails(logs: list[Path], lines: int = 40) -> str:
    """The last ``lines`` lines of each log, for a failure message."""
    parts = []
    for log in logs:
        text = log.read_text(errors="replace").splitlines() if log.exists() else []
        parts.append(f"----- {log.name} (last {lines} lines) -----\n" + "\n".join(text[-lines:]))
    return "\n".join(parts)


def prometheus_config(folder: Path, *, target: str, alertmanager: str) -> Path:
    """deploy/prometheus.yml and rules.yml, pointed at the test's ports, on 1 s intervals."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager]}]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "MendflowPipelineStale":
                rule["for"] = "1s"
    (folder / "rules.yml").write_text(yaml.safe_dump(rules))
    config["rule_files"] = [str(folder / "rules.yml")]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def alertmanager_config(folder: Path, *, webhook: str, credentials: Path) -> Path:
    """deploy/alertmanager.yml posting to the test's mendflow, grouping on 1 s intervals."""
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    routes = [config["route"], *config["route"].get("routes", ())]
    for route in routes:
        route.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", ()):
            hook["url"] = webhook
            hook["http_config"]["authorization"]["credentials_file"] = str(credentials)
    path = folder / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def firing(prometheus: str, name: str) -> list[dict[str, Any]]:
    """Prometheus's firing alerts named ``name`` for the pipeline."""
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=2).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"].get("alertname") == name
            and a["labels"].get("pipeline") == PIPELINE and a["state"] == "firing"]


def freshness(mendflow: str) -> float | None:
    """The pipeline's freshness lag as mendflow's /metrics says it."""
    text = httpx.get(f"{mendflow}/metrics", timeout=2).text
    key = f'mendflow_pipeline_freshness_seconds{{pipeline="{PIPELINE}"}} '
    found = [line for line in text.splitlines() if line.startswith(key)]
    return float(found[0].split()[-1]) if found else None


def rows(engine: sa.Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Rows of a query on the state store (read-only)."""
    with engine.connect() as con:
        return [dict(r._mapping) for r in con.execute(sa.text(sql), params)]


def test_stale_pipeline_alert_reruns_heals_and_resolves(tmp_path: Path) -> None:
    """A stale pipeline fires MendflowPipelineStale in Prometheus, Alertmanager posts it to
    mendflow, which re-runs the pipeline; freshness recovers, the alert resolves in Prometheus,
    the resolved notification reaches mendflow, and the ledger holds the whole healed incident."""
    prometheus_bin = binary("prometheus")
    alertmanager_bin = binary("prometheus-alertmanager")
    deadline = Deadline(BUDGET_S)
    work = tmp_path / "work"
    for folder in ("work", "pipelines", "drops", "prom", "prom/data", "am", "am/data"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    write_orders(tmp_path / "drops" / "a.jsonl", start=0, count=200)
    write_pipeline(
        tmp_path / "pipelines" / "orders.yaml", name=PIPELINE,
        source={"type": "files", "path": str(tmp_path / "drops" / "*.jsonl")},
        destination={"type": "duckdb", "path": str(work / "w.duckdb"), "table": "orders"},
        write_mode="merge", primary_key="id", freshness_s=FRESHNESS_S,
    )
    state_url = f"sqlite:///{work / 'state.db'}"
    credentials = tmp_path / "am" / "token"
    credentials.write_text(TOKEN + "\n")
    credentials.chmod(0o600)
    ports = {name: free_port() for name in ("mendflow", "prometheus", "alertmanager")}
    mendflow = f"http://127.0.0.1:{ports['mendflow']}"
    prometheus = f"http://127.0.0.1:{ports['prometheus']}"
    alertmanager = f"http://127.0.0.1:{ports['alertmanager']}"
    logs = [tmp_path / f"{name}.log" for name in ("mendflow", "prometheus", "alertmanager")]
    env = {**os.environ, "MENDFLOW_API_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    env.pop("MENDFLOW_STATE_URL", None)

    with ExitStack() as stack:
        try:
            stack.enter_context(process(
                [sys.executable, "-m", "mendflow", "serve", str(tmp_path / "pipelines"),
                 "--state", state_url, "--port", str(ports["mendflow"]), "--workers", "1"],
                logs[0], env=env, cwd=work))
            stack.enter_context(process(
                [alertmanager_bin, "--config.file=" + str(alertmanager_config(
                    tmp_path / "am", webhook=f"{mendflow}/hooks/alertmanager",
                    credentials=credentials)),
                 f"--storage.path={tmp_path / 'am' / 'data'}",
                 f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
                 "--cluster.listen-address="],
                logs[2], cwd=tmp_path))
            stack.enter_context(process(
                [prometheus_bin, "--config.file=" + str(prometheus_config(
                    tmp_path / "prom", target=f"127.0.0.1:{ports['mendflow']}",
                    alertmanager=f"127.0.0.1:{ports['alertmanager']}")),
                 f"--storage.tsdb.path={tmp_path / 'prom' / 'data'}",
                 f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                 "--rules.alert.resend-delay=1s"],
                logs[1], cwd=tmp_path))
            incident_id = _loop(deadline, work, state_url, mendflow, prometheus, alertmanager)
        except BaseException:
            print(tails(logs))
            raise
    _logs_carry_the_ids(logs[0], incident_id)


def _loop(deadline: Deadline, work: Path, state_url: str, mendflow: str, prometheus: str,
          alertmanager: str) -> str:
    """The loop's steps, each waited for within the deadline; the incident's id."""
    def up(url: str) -> Callable[[], bool]:
        return lambda: httpx.get(url, timeout=1).status_code == 200

    wait_until(up(f"{mendflow}/readyz"), deadline.left(15), what="mendflow serve ready")
    wait_until(up(f"{prometheus}/-/ready"), deadline.left(10), what="Prometheus ready")
    wait_until(up(f"{alertmanager}/-/ready"), deadline.left(10), what="Alertmanager ready")
    engine = sa.create_engine(state_url)
    try:
        _first_run(deadline, mendflow, engine)
        alert = _fires(deadline, prometheus, mendflow, engine)
        _reruns(deadline, engine, alert["incident_id"])
        _recovers_and_resolves(deadline, mendflow, prometheus, engine, alert)
        _ledger_tells_the_story(mendflow, alert["incident_id"])
    finally:
        engine.dispose()
    return str(alert["incident_id"])


def _first_run(deadline: Deadline, mendflow: str, engine: sa.Engine) -> None:
    """Run the pipeline once through the API; wait for its success."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    asked = httpx.post(f"{mendflow}/api/pipelines/{PIPELINE}/run", headers=headers, timeout=5)
    assert asked.status_code == 202, asked.text
    wait_until(lambda: rows(engine, "SELECT 1 FROM mf_runs WHERE status = 'succeeded'"),
               deadline.left(15), what="the first run to succeed")


def _fires(deadline: Deadline, prometheus: str, mendflow: str,
           engine: sa.Engine) -> dict[str, Any]:
    """Staleness fires the alert in Prometheus; Alertmanager's webhook lands in mf_alerts."""
    lag = freshness(mendflow)
    assert lag is not None
    assert lag < FRESHNESS_S
    wait_until(lambda: firing(prometheus, "MendflowPipelineStale"), deadline.left(FRESHNESS_S + 8),
               what="MendflowPipelineStale firing in Prometheus")
    received = wait_until(
        lambda: rows(engine, "SELECT * FROM mf_alerts WHERE alertname = 'MendflowPipelineStale' "
                             "AND incident_id IS NOT NULL"),
        deadline.left(8), what="Alertmanager's webhook recorded in mf_alerts")
    assert len(received) == 1, received
    alert: dict[str, Any] = received[0]
    assert alert["pipeline"] == PIPELINE
    assert alert["status"] == "firing"
    assert alert["action"] == "rerun"
    assert json.loads(alert["labels"])["mendflow_action"] == "rerun"
    return alert


def _reruns(deadline: Deadline, engine: sa.Engine, incident_id: str) -> None:
    """The alert queued a run carrying its incident; a worker ran it to success."""
    job = wait_until(
        lambda: rows(engine, "SELECT * FROM mf_jobs WHERE incident_id = :i AND status = "
                             "'succeeded'", i=incident_id),
        deadline.left(10), what="the alert's re-run job to succeed")
    assert job[0]["reason"] == "alert"
    assert job[0]["pipeline"] == PIPELINE
    runs = rows(engine, "SELECT status FROM mf_runs WHERE run_id = :r", r=job[0]["run_id"])
    assert runs == [{"status": "succeeded"}]


def _recovers_and_resolves(deadline: Deadline, mendflow: str, prometheus: str,
                           engine: sa.Engine, alert: dict[str, Any]) -> None:
    """Freshness recovers; the alert resolves in Prometheus; the resolved notification lands."""
    lag = freshness(mendflow)
    assert lag is not None
    assert lag < FRESHNESS_S
    wait_until(lambda: not firing(prometheus, "MendflowPipelineStale"), deadline.left(6),
               what="MendflowPipelineStale to resolve in Prometheus")
    resolved = wait_until(
        lambda: rows(engine, "SELECT * FROM mf_alerts WHERE fingerprint = :f AND starts_at = :s "
                             "AND resolved_at IS NOT NULL",
                     f=alert["fingerprint"], s=alert["starts_at"]),
        deadline.left(8), what="Alertmanager's resolved notification recorded in mf_alerts")
    assert resolved[0]["status"] == "resolved"


def _ledger_tells_the_story(mendflow: str, incident_id: str) -> None:
    """The incident is stale, healed, and its actions run alert -> rerun -> verify -> resolved."""
    incident = httpx.get(f"{mendflow}/api/incidents/{incident_id}", timeout=5).json()
    assert incident["pipeline"] == PIPELINE
    assert incident["failure_class"] == "stale"
    assert incident["status"] == "healed"
    assert incident["recovered_at"] is not None
    steps = [(a["action"], a["outcome"]) for a in incident["actions"]]
    names = [action for action, _ in steps]
    assert names[0] == "alert", steps
    assert steps[0][1] == "received"
    assert names.index("rerun") < names.index("verify"), steps
    assert ("verify", "succeeded") in steps
    assert steps[-1] == ("alert", "resolved"), steps
    times = [a["at"] for a in incident["actions"]]
    assert times == sorted(times)


def _logs_carry_the_ids(log: Path, incident_id: str) -> None:
    """mendflow serve logged JSON lines: run events with run and batch ids, the alert and the
    re-run with the incident id, and never the API token."""
    text = log.read_text(encoding="utf-8")
    assert TOKEN not in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    kinds = {line.get("kind") for line in lines if line.get("run_id")}
    assert {"run.started", "batch.loaded", "run.finished"} <= kinds
    assert any(line.get("kind") == "batch.loaded" and line.get("batch_id") for line in lines)
    about = [line for line in lines if line.get("incident_id") == incident_id]
    assert {line["logger"] for line in about} >= {"mendflow.alerts"}, about
    assert len(about) >= 2, about


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
