"""JSON logs (structlog) carrying run, batch and incident ids, with secrets masked.

    logs.configure(json=True, level="INFO")      # once, at process start (serve, worker)
    hooks = [store.record, logs.LogHook()]       # every run event becomes one log line
    logs.log_incident(incident_id, action="rerun", outcome="tried", pipeline="orders")

``configure`` puts one handler on the stdlib ``mendflow`` logger (and any other ``loggers``
named) whose ``structlog.stdlib.ProcessorFormatter`` renders both structlog's events and plain
``logging`` records (the escalation notifier's, the server's) as one JSON object per line, with
``timestamp`` (ISO, UTC), ``level``, ``logger`` and ``event``. Plain records logged while a run
is current (``mendflow.events.current_run``) get its ``run_id`` and ``pipeline``; ``extra=``
fields are kept.

Secrets: values under keys that name a secret (password, token, secret, authorization, api key)
are replaced by ``***``; every other string has URL and libpq passwords masked, as has
``$MENDFLOW_API_TOKEN`` and any value given to ``add_secret``. Masking happens last, after
exception tracebacks are formatted, so a traceback quoting a connection string is masked too.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, MutableMapping, Sequence
from typing import Any, TextIO

import structlog
from structlog.stdlib import BoundLogger, ProcessorFormatter
from structlog.typing import EventDict, Processor, WrappedLogger

from mendflow._redact import MASK, redact
from mendflow.events import CheckRan, Event, current_run

#: The env variable of the API token, which must never reach a log.
TOKEN_ENV = "MENDFLOW_API_TOKEN"  # noqa: S105  the variable's name, not a password
_SECRET_KEY = re.compile(
    r"password|passwd|secret|token|authori[sz]ation|api[_-]?key|credential", re.IGNORECASE
)
_secrets: set[str] = set()
#: Event kinds logged at WARNING (failures that healing may still fix).
WARNING_KINDS = frozenset(
    {"retry.scheduled", "breaker.changed", "tier.switched", "batch.quarantined"}
)
#: Event kinds logged at ERROR.
ERROR_KINDS = frozenset({"run.failed"})


def add_secret(value: str) -> None:
    """Mask ``value`` wherever it appears in a log line from now on."""
    if value:
        _secrets.add(value)


def mask(value: Any) -> Any:
    """``value`` with secrets masked through dicts, lists and tuples (see the module docstring)."""
    if isinstance(value, str):
        return redact(value, (*_secrets, os.environ.get(TOKEN_ENV, "")))
    if isinstance(value, dict):
        return {k: _masked_item(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(item) for item in value]
    return value


def _masked_item(key: Any, value: Any) -> Any:
    if isinstance(key, str) and _SECRET_KEY.search(key) and isinstance(value, str) and value:
        return MASK
    return mask(value)


def _mask_processor(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    return {k: _masked_item(k, v) for k, v in event_dict.items()}


def _add_run(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Give a plain record logged inside a run that run's id and pipeline."""
    run = current_run()
    if run is not None:
        event_dict.setdefault("run_id", run.run_id)
        event_dict.setdefault("pipeline", run.pipeline)
    return event_dict


_TIMESTAMP = structlog.processors.TimeStamper(fmt="iso", utc=True)
#: What every record goes through before the formatter (structlog's and stdlib's alike).
_PRE_CHAIN: tuple[Processor, ...] = (
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    _TIMESTAMP,
)


def formatter(*, json: bool = True) -> ProcessorFormatter:
    """The formatter ``configure`` installs: JSON lines (or structlog's console format)."""
    renderer: Processor = (
        structlog.processors.JSONRenderer(sort_keys=True)
        if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    return ProcessorFormatter(
        foreign_pre_chain=[*_PRE_CHAIN, structlog.stdlib.ExtraAdder(), _add_run],
        processors=[
            ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _mask_processor,
            renderer,
        ],
    )


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``configure`` adds (so a second call replaces it, not doubles it)."""


def configure(
    *,
    json: bool = True,
    level: str | int = "INFO",
    stream: TextIO | None = None,
    loggers: Iterable[str] = ("mendflow",),
) -> None:
    """Send the ``loggers`` (stdlib names; default the ``mendflow`` tree) to ``stream``
    (default stderr) as JSON lines at ``level`` and up; calling it again replaces the setup."""
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(json=json))
    for name in loggers:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _Handler)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *_PRE_CHAIN,
                    ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "mendflow", **bound: Any) -> BoundLogger:
    """A structlog logger writing through the stdlib logger ``name`` (whatever structlog's
    global configuration), with ``bound`` fields on every line."""
    logger: BoundLogger = structlog.wrap_logger(
        logging.getLogger(name),
        processors=[structlog.stdlib.filter_by_level, *_PRE_CHAIN,
                    ProcessorFormatter.wrap_for_formatter],
        wrapper_class=BoundLogger,
    )
    return logger.bind(**bound) if bound else logger


class LogHook:
    """An event hook logging each run event as one line: ``event`` and ``kind`` are its kind,
    with ``run_id``, ``pipeline``, ``batch_id`` (when it has one), ``at`` and ``payload``.

    Failures log at WARNING (retries, breakers, tier switches, quarantines, a failed check) or
    ERROR (a failed run); the rest at INFO. A logging error never breaks the run."""

    def __init__(self, name: str = "mendflow.events") -> None:
        self._log = get_logger(name)

    def __call__(self, event: Event) -> None:
        """Log ``event``."""
        try:
            payload = event.payload()
            fields: dict[str, Any] = {"run_id": event.run_id, "pipeline": event.pipeline,
                                      "kind": event.kind, "at": event.at}
            if "batch_id" in payload:
                fields["batch_id"] = payload.pop("batch_id")
            fields["payload"] = payload
            self._log.log(_level(event), event.kind, **fields)
        except Exception:  # a log line is never worth a failed run
            logging.getLogger("mendflow.logs").debug("could not log an event", exc_info=True)


def _level(event: Event) -> int:
    if event.kind in ERROR_KINDS:
        return logging.ERROR
    if event.kind in WARNING_KINDS or (isinstance(event, CheckRan) and not event.passed):
        return logging.WARNING
    return logging.INFO


def incident_logger(incident_id: str, **bound: Any) -> BoundLogger:
    """A logger whose every line carries ``incident_id`` (and ``bound``)."""
    return get_logger("mendflow.incidents", incident_id=incident_id, **bound)


def log_incident(
    incident_id: str,
    *,
    action: str,
    outcome: str,
    detail: str = "",
    pipeline: str | None = None,
    run_id: str | None = None,
) -> None:
    """Log one healing action of an incident (``event`` is ``incident.action``)."""
    extra: MutableMapping[str, Any] = {}
    if pipeline is not None:
        extra["pipeline"] = pipeline
    if run_id is not None:
        extra["run_id"] = run_id
    level = logging.WARNING if outcome in {"failed", "escalated"} else logging.INFO
    incident_logger(incident_id).log(
        level, "incident.action", action=action, outcome=outcome, detail=detail, **extra
    )


__all__: Sequence[str] = (
    "LogHook", "add_secret", "configure", "formatter", "get_logger", "incident_logger",
    "log_incident", "mask",
)
