"""deploy/: the alert rules, their unit tests, the Alertmanager and Prometheus configs, Grafana.

The rules and configs are checked by the real tools (promtool, amtool; Debian packages
``prometheus`` and ``prometheus-alertmanager``), and every metric the rules and the dashboard
name must be one ``mendflow.metrics`` defines.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mendflow import metrics
from tests._service import binary

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "rules_test.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
GRAFANA = DEPLOY / "grafana" / "mendflow.json"
ACTIONS = {"rerun", "probe", "reset", "pause", "none"}
_NAME = re.compile(r"\bmendflow_[a-z_]+\b")
_LABELS = {"mendflow_action"}  # label names that look like metric names


def tool(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a deploy tool (skip or fail when missing); the completed process, output in text."""
    return subprocess.run(
        [binary(argv[0]), *argv[1:]], capture_output=True, text=True, timeout=60, check=False
    )


def alert_rules() -> list[dict[str, Any]]:
    """The alerting rules of rules.yml."""
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def metric_names(expr: str) -> set[str]:
    """The mendflow metric names an expression uses (histogram series named by their family)."""
    found = set()
    for name in set(_NAME.findall(expr)) - _LABELS:
        for suffix in ("_bucket", "_sum", "_count"):
            base = name.removesuffix(suffix)
            if base != name and metrics.METRICS.get(base, ("",))[0] == "histogram":
                name = base
        found.add(name)
    return found


def grafana_exprs() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets, variables, annotations."""
    board = json.loads(GRAFANA.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", ())]
    exprs += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    exprs += [a["expr"] for a in board["annotations"]["list"] if "expr" in a]
    return exprs


def test_promtool_check_rules() -> None:
    """promtool accepts rules.yml."""
    done = tool("promtool", "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_rule_unit_tests() -> None:
    """Every alert fires on the series meant to fire it and not on the look-alikes."""
    done = tool("promtool", "test", "rules", str(RULES_TEST))
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULES_TEST.read_text(encoding="utf-8")))
    assert tested == {rule["alert"] for rule in alert_rules()}


def test_prometheus_example_config_is_valid() -> None:
    """promtool accepts the example prometheus.yml with its rule file."""
    done = tool("promtool", "check", "config", str(PROMETHEUS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_amtool_check_config() -> None:
    """amtool accepts alertmanager.yml."""
    done = tool("amtool", "check-config", str(ALERTMANAGER))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=MendflowPipelineStale", "pipeline=orders", "mendflow_action=rerun"],
         "mendflow"),
        (["alertname=MendflowBreakerOpenTooLong", "dependency=api", "mendflow_action=probe"],
         "mendflow"),
        (["alertname=MendflowStateStoreDown", "severity=critical"], "team"),
    ],
)
def test_alertmanager_routes_actions_to_the_webhook(labels: list[str], receiver: str) -> None:
    """Alerts with a mendflow_action go to the mendflow webhook receiver, others to people."""
    done = tool("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == [receiver]


def test_webhook_receiver_posts_resolved_with_a_bearer_token() -> None:
    """The webhook receiver posts to /hooks/alertmanager with send_resolved and a bearer token
    read from a file (never inline)."""
    config = yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))
    (receiver,) = [r for r in config["receivers"] if r["name"] == "mendflow"]
    (hook,) = receiver["webhook_configs"]
    assert hook["url"].endswith("/hooks/alertmanager")
    assert hook["send_resolved"] is True
    auth = hook["http_config"]["authorization"]
    assert auth["type"] == "Bearer"
    assert "credentials_file" in auth
    assert "credentials" not in auth


def test_alert_rules_are_complete() -> None:
    """Each alert waits (for), has a severity, a known mendflow_action if any, a summary and a
    description, and acts on a pipeline or a dependency label of the metrics it reads."""
    names = {rule["alert"] for rule in alert_rules()}
    assert {"MendflowPipelineStale", "MendflowPipelineErrorRate", "MendflowBreakerOpenTooLong",
            "MendflowDeadLettersGrowing"} <= names
    for rule in alert_rules():
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["labels"].get("mendflow_action", "none") in ACTIONS
        assert {"summary", "description"} <= set(rule["annotations"])
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        if "mendflow_action" in rule["labels"]:
            labels = {label for name in used for label in metrics.METRICS[name][1]}
            assert labels & {"pipeline", "dependency"}, rule["alert"]


def test_rules_and_dashboard_use_only_defined_metrics() -> None:
    """Every mendflow_* metric the rules and the Grafana dashboard name is defined in
    mendflow.metrics, and the dashboard shows every metric defined."""
    exprs = grafana_exprs()
    used = set().union(*(metric_names(e) for e in exprs))
    rules_used = set().union(*(metric_names(r["expr"]) for r in alert_rules()))
    assert used - set(metrics.METRICS) == set()
    assert rules_used - set(metrics.METRICS) == set()
    assert set(metrics.METRICS) - used == set()


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Every dashboard expression is valid PromQL (promtool parses them as recording rules, the
    dashboard's variables filled in)."""
    exprs = [
        e.replace("$__rate_interval", "5m").replace("$pipeline", ".*")
        for e in grafana_exprs() if not e.startswith("label_values(")
    ]
    rules = {"groups": [{"name": "grafana", "rules": [
        {"record": f"mendflow:grafana_{i}", "expr": e} for i, e in enumerate(exprs)
    ]}]}
    path = tmp_path / "grafana_rules.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    done = tool("promtool", "check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(exprs)} rules found" in done.stdout
