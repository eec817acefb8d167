"""Batch checks from a pipeline file's ``checks:`` list, strictly: unknown keys are refused.

    checks:
      - {check: unique_key, columns: [id]}
      - {check: null_rate, column: email, max_rate: 0.05, severity: warn}
      - {check: volume, z: 3.5}                 # severity warn unless said otherwise
      - {check: freshness, column: updated_at, max_age_s: 86400}

``severity`` is ``block`` or ``warn`` (by default block, warn for volume); ``reconciliation``
always runs and is not listed. ``mendflow.checks.checks_from_spec`` is the public name.
"""

from __future__ import annotations

from typing import Any

from mendflow._validate import as_mapping, describe, known, suggest
from mendflow.checks import Freshness, NullRate, UniqueKey, Volume
from mendflow.exceptions import ConfigError
from mendflow.typing import Check

_SEVERITY = {"block": True, "warn": False}
_KINDS: dict[str, tuple[type[Any], set[str], set[str]]] = {  # class, required, optional keys
    "unique_key": (UniqueKey, {"columns"}, set()),
    "null_rate": (NullRate, {"column", "max_rate"}, set()),
    "volume": (Volume, set(), {"z", "min_history", "window"}),
    "freshness": (Freshness, {"column", "max_age_s"}, set()),
}


def checks_from_spec(spec: Any, where: str) -> tuple[Check, ...]:
    """Build checks from a pipeline file's ``checks:`` list; ``where`` names it in errors.

    Each entry is ``{check: KIND, severity: block|warn, ...the check's own keys}``.
    """
    if spec is None:
        return ()
    if not isinstance(spec, list):
        raise ConfigError(
            f"{where} must be a list of `- check: ...` entries, not {describe(spec)}."
        )
    return tuple(_check(entry, f"{where}[{number}]") for number, entry in enumerate(spec))


def _check(entry: Any, where: str) -> Check:
    fields = dict(as_mapping(entry, where))
    kind = fields.pop("check", None)
    if kind == "reconciliation":
        raise ConfigError(f"{where}: reconciliation always runs; remove this entry.")
    if kind not in _KINDS:
        raise ConfigError(
            f"{where}: unknown check {describe(kind)}{suggest(kind, set(_KINDS))}; use one of: "
            f"{', '.join(_KINDS)}."
        )
    cls, needed, optional = _KINDS[kind]
    known(fields, needed | optional | {"severity"}, where)
    missing = sorted(needed - fields.keys())
    if missing:
        raise ConfigError(f"{where}: check {kind} needs `{missing[0]}:`.")
    severity = fields.pop("severity", "warn" if kind == "volume" else "block")
    if severity not in _SEVERITY:
        raise ConfigError(
            f"{where}.severity must be block or warn, not {describe(severity)}"
            f"{suggest(severity, set(_SEVERITY))}."
        )
    _check_numbers(fields, where)
    try:
        check: Check = cls(**fields, blocking=_SEVERITY[severity])
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return check


def _check_numbers(fields: dict[str, Any], where: str) -> None:
    for key in ("max_rate", "max_age_s", "z"):
        value = fields.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}.{key} must be a number, not {describe(value)}.")
    for key in ("min_history", "window"):
        value = fields.get(key, 2)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}.{key} must be a whole number, not {describe(value)}.")
    if "columns" in fields:
        columns = fields["columns"]
        columns = [columns] if isinstance(columns, str) else columns
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise ConfigError(f"{where}.columns must be a list of column names.")
        fields["columns"] = tuple(columns)
