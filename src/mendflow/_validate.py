"""Checks of parsed YAML values, each raising a ``ConfigError`` that says where and what to do.

``where`` names the place in the file (``orders.yaml: source.url``); an unknown key comes with the
nearest known one, and a wrong value is described as found (``a list ([1, 2])``).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from mendflow.exceptions import ConfigError

__all__ = [
    "as_mapping", "as_positive", "as_string", "describe", "known", "required", "suggest", "typed",
]


def known(spec: Mapping[str, Any], allowed: set[str], where: str) -> None:
    """Refuse a key of ``spec`` that is not in ``allowed``, suggesting the nearest one."""
    for key in spec:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key {key!r}{suggest(key, allowed)}. "
                f"Known keys: {', '.join(sorted(allowed))}."
            )


def suggest(word: object, options: Mapping[str, Any] | set[str]) -> str:
    """`` (did you mean 'x'?)`` for the option nearest to ``word``; "" when none is near."""
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def required(spec: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    """Refuse ``spec`` when one of ``keys`` is missing or null."""
    for key in keys:
        if key not in spec or spec[key] is None:
            raise ConfigError(f"{where}: `{key}:` is required.")


def typed(spec: Any, kinds: Mapping[str, set[str]], where: str) -> str:
    """The ``type:`` of the mapping ``spec``, one of ``kinds``, whose other keys it then checks."""
    entry = as_mapping(spec, where)
    kind = str(entry.get("type"))
    if kind not in kinds:
        raise ConfigError(
            f"{where}.type is {entry.get('type')!r}; use one of: {', '.join(kinds)}"
            f"{suggest(kind, kinds)}."
        )
    known(entry, kinds[kind], where)
    return kind


def as_mapping(spec: Any, where: str) -> dict[str, Any]:
    """``spec`` if it is a mapping."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a mapping of keys to values, not {describe(spec)}.")
    return spec


def as_string(value: Any, where: str) -> str:
    """``value`` if it is a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string, not {describe(value)}.")
    return value


def as_positive(value: Any, where: str) -> int:
    """``value`` if it is a whole number of at least 1 (not a bool)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where} must be a positive whole number, not {value!r}.")
    return value


def describe(value: Any) -> str:
    """A value as an error message shows it: its type and repr, or "nothing" for None."""
    return "nothing" if value is None else f"a {type(value).__name__} ({value!r})"
