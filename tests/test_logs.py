"""JSON logs: each line parses, carries run, batch and incident ids, and never a secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from mendflow import logs
from mendflow.events import (
    BatchLoaded,
    RetryScheduled,
    RunContext,
    RunFailed,
    RunStarted,
    bind_run,
    unbind_run,
)
from mendflow.events import Hooks as EventHooks
from mendflow.pipeline import Pipeline
from mendflow.state.store import StateStore
from mendflow.testing import FakeClock, MemorySource

TOKEN = "tok-5ecret-abc"


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """A stream the mendflow loggers write JSON lines to, undone after the test."""
    monkeypatch.setenv(logs.TOKEN_ENV, TOKEN)
    stream = io.StringIO()
    logger = logging.getLogger("mendflow")
    level = logger.level
    logs.configure(json=True, level="DEBUG", stream=stream)
    yield stream
    for handler in [h for h in logger.handlers if isinstance(h, logs._Handler)]:
        logger.removeHandler(handler)
    logger.setLevel(level)
    structlog.reset_defaults()


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every line written so far, each parsed as one JSON object."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_hook_lines_carry_run_and_batch(lines: io.StringIO) -> None:
    """Each run event becomes one JSON line with run_id, pipeline, kind, batch_id when the event
    has one, its payload, and a level matching how bad it is."""
    hook = logs.LogHook()
    ids: dict[str, Any] = {"run_id": "run-1", "pipeline": "orders", "at": 1.0}
    hook(RunStarted(**ids, write_mode="append"))
    hook(BatchLoaded(**ids, batch_id="b-7", rows=5, dead_letters=1, checkpoint={"next": 2}))
    hook(RunFailed(**ids, error="x", error_type="E", retryable=False, duration_s=1.5))
    started, loaded, failed = parsed(lines)
    assert started["event"] == started["kind"] == "run.started"
    assert "batch_id" not in started
    assert loaded["run_id"] == "run-1"
    assert loaded["pipeline"] == "orders"
    assert loaded["batch_id"] == "b-7"
    assert loaded["payload"] == {"rows": 5, "dead_letters": 1, "checkpoint": {"next": 2}}
    assert loaded["level"] == "info"
    assert failed["level"] == "error"
    assert failed["payload"]["error_type"] == "E"
    assert all("timestamp" in line for line in (started, loaded, failed))


def test_incident_lines_carry_incident_id(lines: io.StringIO) -> None:
    """An incident action is logged with its incident_id, action, outcome and pipeline; a bound
    incident logger adds the id to every line."""
    logs.log_incident("inc-42", action="rerun", outcome="tried", detail="job j1", pipeline="o")
    logs.incident_logger("inc-42", pipeline="o").info("verify.done", outcome="succeeded")
    first, second = parsed(lines)
    assert first == first | {"event": "incident.action", "incident_id": "inc-42",
                             "action": "rerun", "outcome": "tried", "pipeline": "o"}
    assert second["incident_id"] == "inc-42"
    assert second["outcome"] == "succeeded"


def test_no_password_or_token_in_lines(lines: io.StringIO) -> None:
    """URL passwords, the API token and secret-named fields are masked in events, plain logging
    records, their extra fields and tracebacks."""
    hook = logs.LogHook()
    hook(RetryScheduled(
        run_id="r", pipeline="p", at=1.0, dependency="postgresql://app:hunter2@db/x", attempt=1,
        delay_s=0.5, error=f"auth failed for postgresql://app:hunter2@db/x ({TOKEN})",
        error_type="OperationalError"))
    plain = logging.getLogger("mendflow.escalation")
    plain.error("webhook %s failed", "https://u:hunter2@hooks.example/x",
                extra={"alert": {"password": "hunter2", "api_token": TOKEN, "n": 1}})
    try:
        raise ValueError("cannot reach host=db password=hunter2")
    except ValueError:
        logging.getLogger("mendflow.server").exception("request failed")
    text = lines.getvalue()
    assert "hunter2" not in text
    assert TOKEN not in text
    retry, webhook, failure = parsed(lines)
    assert retry["level"] == "warning"
    assert retry["payload"]["dependency"] == "postgresql://app:***@db/x"
    assert webhook["alert"] == {"password": "***", "api_token": "***", "n": 1}
    assert "ValueError" in failure["exception"]


def test_plain_records_inside_a_run_get_its_ids(lines: io.StringIO) -> None:
    """A stdlib mendflow.* record logged while a run is current carries its run_id and pipeline."""
    token = bind_run(RunContext("run-9", "orders", EventHooks(), lambda: 0.0))
    try:
        logging.getLogger("mendflow.escalation").warning("inside")
    finally:
        unbind_run(token)
    logging.getLogger("mendflow.escalation").warning("outside")
    inside, outside = parsed(lines)
    assert (inside["run_id"], inside["pipeline"], inside["logger"]) == (
        "run-9", "orders", "mendflow.escalation")
    assert "run_id" not in outside


def test_a_real_run_logs_every_event(lines: io.StringIO, tmp_path: Path) -> None:
    """Hooked into a real run, the log has one parseable line per event, in order, each with
    the run's id, and batch lines with their batch ids."""
    from mendflow.sinks import DuckDBSink

    source = MemorySource([[{"id": 1}], [{"id": 2}]], name="mem")
    pipeline = Pipeline(
        name="mem_orders", source=source,
        destination=DuckDBSink(str(tmp_path / "d.duckdb"), table="orders"),
    )
    state = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    result = pipeline.run(hooks=[logs.LogHook()], state=state, clock=FakeClock())
    events = [line for line in parsed(lines) if line["logger"] == "mendflow.events"]
    assert events[0]["kind"] == "run.started"
    assert events[-1]["kind"] == "run.finished"
    assert {line["run_id"] for line in events} == {result.run_id}
    loaded = [line["batch_id"] for line in events if line["kind"] == "batch.loaded"]
    assert loaded == ["mem#0", "mem#1"]


def test_configure_twice_does_not_double_lines(lines: io.StringIO) -> None:
    """Configuring again replaces the handler: one line per record, on the new stream."""
    again = io.StringIO()
    logs.configure(stream=again)
    logging.getLogger("mendflow.x").warning("once")
    assert lines.getvalue() == ""
    assert len(again.getvalue().splitlines()) == 1
