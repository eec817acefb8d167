"""When a pipeline runs by itself, how fresh its data must stay, and when it must be left alone.

In a pipeline's YAML file (all three keys optional)::

    schedule: {every_s: 300}              # or {cron: "*/5 * * * *"} (UTC, five fields)
    freshness_s: 3600                     # older data is stale: alerts fire, the SLO counts it
    maintenance:                          # healing actions are suppressed inside these windows
      - {cron: "0 2 * * *", duration_s: 3600}          # every day 02:00-03:00 UTC
      - {start: "2026-12-24T00:00:00Z", end: "2026-12-27T00:00:00Z"}

``Schedule.next_after(t)`` is the first due time strictly after ``t`` (epoch seconds); a cron
schedule is read in UTC. ``Window.covers(t)`` says whether ``t`` falls in a maintenance window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from mendflow._validate import as_mapping, known
from mendflow.exceptions import ConfigError


@dataclass(frozen=True, slots=True)
class Schedule:
    """Every ``every_s`` seconds, or at each time the five-field ``cron`` expression names."""

    every_s: float | None = None
    cron: str | None = None

    def __post_init__(self) -> None:
        if (self.every_s is None) == (self.cron is None):
            raise ConfigError("a schedule needs exactly one of every_s or cron.")
        if self.every_s is not None and self.every_s <= 0:
            raise ConfigError(f"schedule every_s must be > 0 seconds, not {self.every_s!r}.")
        if self.cron is not None:
            _check_cron(self.cron, "schedule cron")

    def next_after(self, t: float) -> float:
        """The first due time strictly after ``t``."""
        if self.every_s is not None:
            return t + self.every_s
        assert self.cron is not None
        return _next_fire(self.cron, t)

    def describe(self) -> str:
        """``every 300s`` or ``cron */5 * * * *``, for people."""
        return f"every {self.every_s:g}s" if self.every_s is not None else f"cron {self.cron}"


@dataclass(frozen=True, slots=True)
class Window:
    """A maintenance window: from ``start`` to ``end`` (epoch seconds), or for ``duration_s``
    after each time ``cron`` fires."""

    start: float | None = None
    end: float | None = None
    cron: str | None = None
    duration_s: float | None = None

    def covers(self, t: float) -> bool:
        """True when ``t`` falls inside this window."""
        if self.cron is None:
            start, end = self.start or 0.0, self.end or 0.0
            return start <= t < end
        assert self.duration_s is not None
        fired = croniter(self.cron, datetime.fromtimestamp(t, UTC)).get_prev(float)
        # get_prev is strictly before t: a window that opens exactly at t counts too.
        return t - float(fired) < self.duration_s or _next_fire(self.cron, t - 1e-6) == t


def schedule_from_spec(value: Any, where: str) -> Schedule | None:
    """``{every_s: N}`` or ``{cron: "..."}`` (None: no schedule)."""
    if value is None:
        return None
    spec = as_mapping(value, where)
    known(spec, {"every_s", "cron"}, where)
    every = spec.get("every_s")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int | float)):
        raise ConfigError(f"{where}.every_s must be a number of seconds, not {every!r}.")
    cron = spec.get("cron")
    if cron is not None and not isinstance(cron, str):
        raise ConfigError(f"{where}.cron must be a cron expression such as '*/5 * * * *'.")
    try:
        return Schedule(every_s=None if every is None else float(every), cron=cron)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def windows_from_spec(value: Any, where: str) -> tuple[Window, ...]:
    """A list of ``{cron, duration_s}`` or ``{start, end}`` (ISO 8601 times) windows."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of windows such as "
                          "{cron: '0 2 * * *', duration_s: 3600}.")
    return tuple(_window(item, f"{where}[{n}]") for n, item in enumerate(value, 1))


def _window(item: Any, where: str) -> Window:
    spec = as_mapping(item, where)
    known(spec, {"cron", "duration_s", "start", "end"}, where)
    if "cron" in spec:
        cron, duration = spec.get("cron"), spec.get("duration_s")
        if not isinstance(cron, str):
            raise ConfigError(f"{where}.cron must be a cron expression such as '0 2 * * *'.")
        _check_cron(cron, f"{where}.cron")
        if isinstance(duration, bool) or not isinstance(duration, int | float) or duration <= 0:
            raise ConfigError(f"{where}.duration_s must be a number of seconds > 0.")
        return Window(cron=cron, duration_s=float(duration))
    start, end = _instant(spec.get("start"), f"{where}.start"), _instant(
        spec.get("end"), f"{where}.end")
    if end <= start:
        raise ConfigError(f"{where} ends before it starts; set end after start.")
    return Window(start=start, end=end)


def _instant(value: Any, where: str) -> float:
    if isinstance(value, datetime):  # YAML parses unquoted timestamps itself
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(
                f"{where} must be an ISO 8601 time such as 2026-12-24T00:00:00Z, not {value!r}."
            ) from None
    else:
        raise ConfigError(f"{where} must be an ISO 8601 time such as 2026-12-24T00:00:00Z.")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _check_cron(expression: str, where: str) -> None:
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise ConfigError(
            f"{where} {expression!r} is not a five-field cron expression "
            "(minute hour day month weekday), e.g. '*/5 * * * *'."
        )


def _next_fire(expression: str, t: float) -> float:
    return float(croniter(expression, datetime.fromtimestamp(t, UTC)).get_next(float))


def covered(windows: Sequence[Window], t: float) -> bool:
    """True when any of ``windows`` covers ``t``."""
    return any(w.covers(t) for w in windows)
