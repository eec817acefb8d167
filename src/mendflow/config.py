"""Pipelines declared in YAML, for the built-in sources and destinations.

    name: orders
    source:
      type: files                # or http
      path: drops/*.jsonl        # relative paths start at this file's folder
    destination:
      type: duckdb
      path: warehouse.duckdb
      table: orders
    write_mode: merge
    primary_key: [id]
    columns: {amount: double, updated_at: timestamptz}   # types only; or a full contract:
    contract:
      columns: {id: {type: bigint, nullable: false}, status: {type: varchar, in: [new, paid]}}
      unique: [id]
    schema: evolve               # or freeze, discard_columns
    checks:                      # audits inside the load transaction, before publishing
      - {check: unique_key, columns: [id]}
      - {check: null_rate, column: email, max_rate: 0.05, severity: warn}
    max_replays: 3               # mendflow dlq replay tries a dead letter at most this often
    transforms:
      - sql: SELECT *, amount * qty AS total FROM batch
      - python: mypackage.cleaning:drop_test_orders
    state: sqlite:///.mendflow/state.db
    # source and destination may set `breaker: {min_calls: 5, open_s: 10}` (or false for none)
    healing: {max_actions: 6, window_s: 3600, cooldown_s: 1, base_s: 1, cap_s: 60,
              webhook: https://hooks.example/...}
    schedule: {every_s: 300}     # or {cron: "*/5 * * * *"}; for `mendflow serve` (see schedule.py)
    freshness_s: 3600            # older data is stale
    maintenance: [{cron: "0 2 * * *", duration_s: 3600}]   # healing actions suppressed

Every key is checked: an unknown one is an error that names it and suggests the nearest known one.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mendflow._config_sinks import destination, expand_env, path_in
from mendflow._validate import (
    as_mapping,
    as_positive,
    as_string,
    describe,
    known,
    required,
    typed,
)
from mendflow.checks import checks_from_spec
from mendflow.contracts.contract import Contract
from mendflow.exceptions import ConfigError
from mendflow.pipeline import Pipeline
from mendflow.remediation.supervisor import DEFAULT_HEALING, Healing
from mendflow.resilience.breaker import BreakerPolicy
from mendflow.resilience.retry import Retry
from mendflow.schedule import Schedule, Window, schedule_from_spec, windows_from_spec
from mendflow.sources.files import ROW_GROUP, FileSource
from mendflow.sources.http import HttpSource, Pagination
from mendflow.transforms import SqlTransform
from mendflow.typing import Check, Transform

_TOP = {"name", "source", "destination", "write_mode", "primary_key", "columns", "transforms",
        "state", "healing", "contract", "schema", "checks", "max_replays", "schedule",
        "freshness_s", "maintenance"}
_HEALING = {"max_actions", "window_s", "cooldown_s", "base_s", "cap_s", "webhook"}
_SOURCES = {
    "files": {"type", "path", "format", "batch_size", "min_age_s"},
    "http": {"type", "url", "records_path", "pagination", "incremental", "params", "headers",
             "timeout_s", "retry", "breaker"},
}
_PAGINATION = {"kind", "page_param", "start_page", "size_param", "page_size", "offset_param",
               "limit_param", "limit", "cursor_param", "cursor_path", "next_path"}
_INCREMENTAL = {"field", "param", "initial"}
_RETRY = {"attempts", "base_s", "cap_s", "deadline_s"}
_BREAKER = {f.name for f in dataclasses.fields(BreakerPolicy)}


@dataclasses.dataclass(frozen=True, slots=True)
class PipelineFile:
    """A pipeline loaded from YAML, with the state store URL it names (if any)."""

    pipeline: Pipeline
    state: str | None
    path: Path
    healing: Healing = DEFAULT_HEALING
    webhook: str | None = None
    #: When ``mendflow serve`` runs it (None: only when asked), how old its data may grow
    #: before it is stale, and the windows in which healing actions are suppressed.
    schedule: Schedule | None = None
    freshness_s: float | None = None
    maintenance: tuple[Window, ...] = ()


def load(path: str | os.PathLike[str]) -> PipelineFile:
    """Read, check and build the pipeline declared in the YAML file at ``path``."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"pipeline file not found: {file}; check the path.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read pipeline file {file}: {exc}") from None
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{file} is not valid YAML{at}: {problem}. Fix the syntax.") from None
    healing, webhook = _healing(spec, str(file))
    pipeline = build(spec, base=file.parent, origin=str(file))
    return PipelineFile(
        pipeline, _state(spec), file, healing, webhook,
        schedule=schedule_from_spec(spec.get("schedule"), f"{file}: schedule"),
        freshness_s=_freshness(spec.get("freshness_s"), f"{file}: freshness_s"),
        maintenance=windows_from_spec(spec.get("maintenance"), f"{file}: maintenance"),
    )


def build(spec: Any, *, base: Path, origin: str = "pipeline") -> Pipeline:
    """Build a pipeline from an already parsed mapping (paths relative to ``base``)."""
    top = as_mapping(spec, origin)
    known(top, _TOP, origin)
    required(top, ("name", "source", "destination"), origin)
    name = as_string(top["name"], f"{origin}: name")
    return Pipeline(
        name=name,
        source=_source(top["source"], base, f"{origin}: source"),
        destination=destination(top["destination"], base, f"{origin}: destination"),
        destination_breaker=_breaker(
            as_mapping(top["destination"], f"{origin}: destination"), f"{origin}: destination"
        ),
        transforms=_transforms(top.get("transforms") or [], f"{origin}: transforms"),
        write_mode=top.get("write_mode", "append"),
        primary_key=_key(top.get("primary_key"), f"{origin}: primary_key"),
        columns=_columns(top.get("columns") or {}, f"{origin}: columns"),
        contract=_contract(top.get("contract"), f"{origin}: contract"),
        schema=top.get("schema", "evolve"),
        checks=_checks(top.get("checks") or [], f"{origin}: checks"),
        max_replays=top.get("max_replays", 3),
    )


def _source(spec: Any, base: Path, where: str) -> FileSource | HttpSource:
    kind = typed(spec, _SOURCES, where)
    if kind == "files":
        return FileSource(
            path_in(spec.get("path"), base, f"{where}.path"),
            format=spec.get("format"),
            batch_size=as_positive(spec.get("batch_size", ROW_GROUP), f"{where}.batch_size"),
            min_age_s=float(spec.get("min_age_s", 0.0)),
        )
    incremental = as_mapping(spec.get("incremental") or {}, f"{where}.incremental")
    known(incremental, _INCREMENTAL, f"{where}.incremental")
    retry = as_mapping(spec.get("retry") or {}, f"{where}.retry")
    known(retry, _RETRY, f"{where}.retry")
    pagination = as_mapping(spec.get("pagination") or {}, f"{where}.pagination")
    known(pagination, _PAGINATION, f"{where}.pagination")
    return HttpSource(
        as_string(spec.get("url"), f"{where}.url"),
        records_path=spec.get("records_path"),
        pagination=Pagination(**pagination),
        incremental_field=incremental.get("field"),
        incremental_param=incremental.get("param"),
        initial_cursor=incremental.get("initial"),
        params=spec.get("params"),
        headers=spec.get("headers"),
        timeout_s=float(spec.get("timeout_s", 10.0)),
        retry=Retry(**retry),
        breaker=_breaker(spec, where),
    )


def _transforms(spec: Any, where: str) -> list[Transform]:
    if not isinstance(spec, list):
        raise ConfigError(f"{where} must be a list of `- sql: ...` or `- python: module:func`.")
    out: list[Transform] = []
    for number, item in enumerate(spec, 1):
        entry = as_mapping(item, f"{where}[{number}]")
        known(entry, {"sql", "python"}, f"{where}[{number}]")
        if len(entry) != 1:
            raise ConfigError(f"{where}[{number}] needs exactly one of `sql:` or `python:`.")
        if "sql" in entry:
            out.append(SqlTransform(as_string(entry["sql"], f"{where}[{number}].sql")))
        else:
            out.append(_import(as_string(entry["python"], f"{where}[{number}].python")))
    return out


def _import(ref: str) -> Transform:
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise ConfigError(f"python transform {ref!r} must look like `package.module:function`.")
    try:
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"cannot import transform {ref!r}: {exc}; check it is installed."
        ) from None
    if not callable(found):
        raise ConfigError(f"transform {ref!r} is not callable; point at a function.")
    transform: Transform = found
    return transform



def _key(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(f"{where} must be a column name or a list of column names.")
    return tuple(items)


def _columns(value: Any, where: str) -> dict[str, str]:
    spec = as_mapping(value, where)
    for column, kind in spec.items():
        if not isinstance(kind, str):
            raise ConfigError(f"{where}.{column} must be a type name such as double, not {kind!r}.")
    return {str(k): v for k, v in spec.items()}


def _contract(value: Any, where: str) -> Contract | None:
    return None if value is None else Contract.from_spec(value, where)


def _checks(value: Any, where: str) -> tuple[Check, ...]:
    return checks_from_spec(value, where)


def _healing(spec: Any, origin: str) -> tuple[Healing, str | None]:
    where = f"{origin}: healing"
    entry = as_mapping(spec.get("healing") or {}, where) if isinstance(spec, dict) else {}
    known(entry, _HEALING, where)
    max_actions = entry.get("max_actions", 6)
    if not isinstance(max_actions, int) or isinstance(max_actions, bool) or max_actions < 0:
        raise ConfigError(f"{where}.max_actions must be a whole number >= 0, not {max_actions!r}.")
    seconds = {}
    for key, default in (("base_s", 1.0), ("cap_s", 60.0), ("window_s", 3600.0),
                         ("cooldown_s", 1.0)):
        value = entry.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}.{key} must be a number of seconds, not {describe(value)}.")
        seconds[key] = float(value)
    backoff = Retry(base_s=seconds["base_s"], cap_s=seconds["cap_s"])
    webhook = entry.get("webhook")
    if webhook is not None:
        webhook = as_string(webhook, f"{where}.webhook")
    healing = Healing(
        max_actions=max_actions, window_s=seconds["window_s"],
        cooldown_s=seconds["cooldown_s"], backoff=backoff,
    )
    return healing, webhook


def _breaker(spec: Mapping[str, Any], where: str) -> BreakerPolicy | None:
    """``breaker: false`` for none; a mapping of ``BreakerPolicy`` fields; the default if absent."""
    entry = spec.get("breaker", True)
    if entry is False:
        return None
    if entry is True or entry is None:
        return BreakerPolicy()
    fields = as_mapping(entry, f"{where}.breaker")
    known(fields, _BREAKER, f"{where}.breaker")
    for key, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}.breaker.{key} must be a number, not {describe(value)}.")
    try:
        return BreakerPolicy(**fields)
    except ConfigError as exc:
        raise ConfigError(f"{where}.breaker: {exc}") from None


def _freshness(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where} must be a number of seconds > 0, not {describe(value)}.")
    return float(value)


def _state(spec: Any) -> str | None:
    state = spec.get("state") if isinstance(spec, dict) else None
    if state is not None and not isinstance(state, str):
        raise ConfigError("state must be a database URL such as sqlite:///state.db.")
    return None if state is None else expand_env(state, "state")
