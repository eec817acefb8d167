"""The command line: results, history, JSON, and errors as one clear paragraph with exit codes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import duckdb

from tests.conftest import write_pipeline


def _mendflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mendflow", *args], cwd=cwd, capture_output=True, text=True,
        timeout=120, check=False,
    )


def _files_pipeline(folder: Path, drops: Path) -> Path:
    return write_pipeline(
        folder / "pipeline.yaml", name="orders",
        source={"type": "files", "path": str(drops / "*.jsonl")},
        destination={"type": "duckdb", "path": "w.duckdb", "table": "orders"},
        write_mode="merge", primary_key="id", columns={"amount": "double"},
    )


def test_run_status_and_runs_report_in_text_and_json(orders_dir: Path, tmp_path: Path) -> None:
    """run loads; a second run loads nothing; status and runs show both in JSON."""
    pipeline = _files_pipeline(tmp_path, orders_dir)
    first = _mendflow("run", str(pipeline), "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["rows_read"] == 3000
    assert result["rows_loaded"] + result["dead_letters"] == 3000
    second = _mendflow("run", str(pipeline), cwd=tmp_path)
    assert second.returncode == 0
    assert "read 0 rows" in second.stdout
    status = json.loads(_mendflow("status", "--json", cwd=tmp_path).stdout)
    assert status[0]["pipeline"] == "orders"
    assert status[0]["runs"] == 2
    assert status[0]["rows_loaded"] == result["rows_loaded"]
    runs = json.loads(_mendflow("runs", "--json", cwd=tmp_path).stdout)
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    assert "succeeded" in _mendflow("runs", cwd=tmp_path).stdout


def test_user_errors_exit_2_with_one_paragraph_and_no_traceback(tmp_path: Path) -> None:
    """Missing file, broken YAML, unknown key: exit 2, a message, no traceback."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [x\n", encoding="utf-8")
    typo = write_pipeline(tmp_path / "typo.yaml", name="x", sorce={})
    cases = {
        "missing.yaml": "pipeline file not found",
        str(broken): "not valid YAML",
        str(typo): "did you mean 'source'",
    }
    for path, expected in cases.items():
        done = _mendflow("run", path, cwd=tmp_path)
        assert done.returncode == 2, (path, done.stderr)
        assert expected in done.stderr
        assert "Traceback" not in done.stderr
        assert done.stderr.startswith("error: ")


def test_a_refused_connection_fails_the_run_with_exit_1_and_commits_nothing(tmp_path: Path) -> None:
    """A source that refuses connections: exit 1, a clear message, an empty destination."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pipeline = write_pipeline(
        tmp_path / "p.yaml", name="api",
        source={"type": "http", "url": f"http://127.0.0.1:{port}/orders",
                "retry": {"attempts": 2, "base_s": 0.01}, "timeout_s": 1},
        destination={"type": "duckdb", "path": "w.duckdb", "table": "orders"},
        healing={"max_actions": 2, "base_s": 0.01},
    )
    done = _mendflow("run", str(pipeline), cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"127.0.0.1:{port}" in done.stderr
    assert "check the service is up" in done.stderr
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM _mendflow_checkpoints").fetchone() == (0,)
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert "orders" not in tables
    runs = json.loads(_mendflow("runs", "--json", cwd=tmp_path).stdout)
    assert [r["status"] for r in runs] == ["failed"] * 3  # the run and two restarts
    assert runs[0]["error_type"] == "SourceUnavailable"
    assert "ESCALATED mendflow api: transient" in done.stderr
    [incident] = json.loads(_mendflow("incidents", "--json", cwd=tmp_path).stdout)
    actions = [a["action"] for a in incident["actions"] if a["action"] != "retry"]
    assert actions == ["restart_from_checkpoint", "restart_from_checkpoint", "escalate"]
    shown = _mendflow("incidents", "show", incident["incident_id"][:8], cwd=tmp_path)
    assert "escalate: paged" in shown.stdout


def test_demo_twice_leaves_the_same_rows(tmp_path: Path) -> None:
    """The demo heals its scripted faults, pages once for the 401; a second run adds nothing."""
    first = _mendflow("demo", "--workdir", "demo", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    one = json.loads(first.stdout)
    assert one["tables"] == {"orders": 540, "store_sales": 446, "_mendflow_dead_letters": 5}
    assert [p["status"] for p in one["pipelines"]] == [
        "succeeded", "succeeded", "succeeded", "escalated", "succeeded"]
    assert [p["rows_loaded"] for p in one["pipelines"]] == [500, 100, 40, 0, 446]
    assert [p["dead_letters"] for p in one["pipelines"]][-1] == 5  # of 451 records in the drops
    stages = sorted(d["stage"] for d in one["dead_letters"])
    assert stages == ["coerce", "parse", "validate", "validate", "validate"]
    assert [v["changes"] for v in one["schema_versions"]][1] == [
        {"change": "added", "column": "channel", "from": None, "to": "VARCHAR"}]
    assert {w["error_type"] for w in one["went_wrong"]} >= {"SourceUnavailable", "RateLimited"}
    stories = [(i["dependency"], i["status"], [a["action"] for a in i["actions"]])
               for i in one["incidents"]]
    healed = [actions for _, status, actions in stories if status == "healed"]
    assert all(actions.count("retry") for actions in healed)
    assert any("circuit_breaker" in a and "wait_for_dependency" in a for a in healed)  # burst
    assert any("switch_tier" in a for a in healed)  # the outage served from the snapshot
    assert [(d, s) for d, s, _ in stories if s != "healed"] == [("customers-api", "escalated")]
    assert [p["kind"] for p in one["pages"]] == ["escalated"]
    second = json.loads(_mendflow("demo", "--workdir", "demo", "--json", cwd=tmp_path).stdout)
    assert second["tables"] == one["tables"]
    assert [p["rows_loaded"] for p in second["pipelines"]] == [0, 0, 0, 0, 0]
    assert second["pages"] == []  # the 401 incident was paged already
    text = _mendflow("demo", "--workdir", "demo", cwd=tmp_path).stdout
    assert "incidents and how they healed" in text
