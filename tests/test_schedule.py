"""Schedules and maintenance windows as the YAML declares them (``mendflow.schedule``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mendflow.exceptions import ConfigError
from mendflow.schedule import (
    Schedule,
    Window,
    covered,
    schedule_from_spec,
    windows_from_spec,
)


def _t(text: str) -> float:
    """Epoch seconds of a UTC time written ``2026-03-01T02:00:00``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_every_s_is_due_that_long_after() -> None:
    """An interval schedule is next due ``every_s`` seconds after the time given."""
    assert Schedule(every_s=300).next_after(1000.0) == 1300.0
    assert Schedule(every_s=0.5).describe() == "every 0.5s"


def test_cron_next_after_is_strictly_after_in_utc() -> None:
    """A cron schedule is due at its next fire time in UTC, strictly after the time given."""
    every5 = Schedule(cron="*/5 * * * *")
    assert every5.next_after(_t("2026-03-01T10:01:30")) == _t("2026-03-01T10:05:00")
    assert every5.next_after(_t("2026-03-01T10:05:00")) == _t("2026-03-01T10:10:00")
    nightly = Schedule(cron="0 2 * * *")
    assert nightly.next_after(_t("2026-03-01T02:00:01")) == _t("2026-03-02T02:00:00")
    assert nightly.next_after(_t("2026-03-01T01:59:59")) == _t("2026-03-01T02:00:00")
    assert nightly.describe() == "cron 0 2 * * *"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of every_s or cron"),
        ({"every_s": 5, "cron": "* * * * *"}, "exactly one of every_s or cron"),
        ({"every_s": 0}, "every_s must be > 0"),
        ({"every_s": -1}, "every_s must be > 0"),
        ({"cron": "*/5 * * *"}, "not a five-field cron expression"),
        ({"cron": "0 */5 * * * *"}, "not a five-field cron expression"),
        ({"cron": "61 * * * *"}, "not a five-field cron expression"),
    ],
)
def test_bad_schedules_are_refused(kwargs: dict[str, Any], message: str) -> None:
    """A schedule without exactly one valid rule is a ConfigError saying what to write."""
    with pytest.raises(ConfigError, match=message):
        Schedule(**kwargs)


def test_schedule_from_spec_reads_yaml_values() -> None:
    """``{every_s}`` and ``{cron}`` mappings become schedules; no value means no schedule."""
    assert schedule_from_spec(None, "f.yaml: schedule") is None
    assert schedule_from_spec({"every_s": 300}, "f") == Schedule(every_s=300.0)
    assert schedule_from_spec({"cron": "*/5 * * * *"}, "f") == Schedule(cron="*/5 * * * *")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([300], r"f.yaml: schedule must be a mapping"),
        ({"every": 300}, r"unknown key 'every' \(did you mean 'every_s'\?\)"),
        ({"every_s": "5m"}, r"f.yaml: schedule.every_s must be a number of seconds"),
        ({"every_s": True}, r"every_s must be a number of seconds"),
        ({"cron": 5}, r"f.yaml: schedule.cron must be a cron expression"),
        ({}, r"f.yaml: schedule: a schedule needs exactly one of every_s or cron"),
        ({"cron": "every day"}, r"f.yaml: schedule: schedule cron 'every day' is not a five"),
    ],
)
def test_schedule_spec_errors_name_the_place(spec: Any, message: str) -> None:
    """A wrong schedule in YAML names the file and key and what to write instead."""
    with pytest.raises(ConfigError, match=message):
        schedule_from_spec(spec, "f.yaml: schedule")


def test_fixed_window_covers_its_start_not_its_end() -> None:
    """A start/end window covers [start, end)."""
    window = Window(start=100.0, end=200.0)
    assert not window.covers(99.999)
    assert window.covers(100.0)
    assert window.covers(199.999)
    assert not window.covers(200.0)


def test_cron_window_covers_duration_after_each_fire() -> None:
    """A cron window covers ``duration_s`` from each fire time, the fire time included."""
    window = Window(cron="0 2 * * *", duration_s=3600)
    assert not window.covers(_t("2026-03-01T01:59:59"))
    assert window.covers(_t("2026-03-01T02:00:00"))
    assert window.covers(_t("2026-03-01T02:59:59"))
    assert not window.covers(_t("2026-03-01T03:00:00"))
    assert window.covers(_t("2026-03-02T02:30:00"))


def test_windows_from_spec_reads_both_forms() -> None:
    """Cron windows and ISO 8601 start/end windows (Z, offsets, YAML datetimes, naive = UTC)."""
    found = windows_from_spec(
        [
            {"cron": "0 2 * * *", "duration_s": 3600},
            {"start": "2026-12-24T00:00:00Z", "end": "2026-12-27T00:00:00+00:00"},
            {"start": datetime(2026, 1, 1, 0, 0), "end": "2026-01-01T01:00:00"},
        ],
        "f.yaml: maintenance",
    )
    assert found[0] == Window(cron="0 2 * * *", duration_s=3600.0)
    assert found[1] == Window(start=_t("2026-12-24T00:00:00"), end=_t("2026-12-27T00:00:00"))
    assert found[2] == Window(start=_t("2026-01-01T00:00:00"), end=_t("2026-01-01T01:00:00"))
    assert windows_from_spec(None, "f") == ()
    assert covered(found, _t("2026-12-25T12:00:00"))
    assert not covered(found, _t("2026-12-27T00:00:00"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"cron": "0 2 * * *"}, r"maintenance must be a list of windows"),
        ([{"cron": "0 2 * * *"}], r"maintenance\[1\].duration_s must be a number of seconds > 0"),
        ([{"cron": "0 2 * * *", "duration_s": 0}], r"duration_s must be a number of seconds > 0"),
        ([{"cron": "0 2 * *", "duration_s": 5}], r"maintenance\[1\].cron '0 2 \* \*' is not"),
        ([{"cron": 2, "duration_s": 5}], r"maintenance\[1\].cron must be a cron expression"),
        ([{"start": "2026-01-02", "end": "2026-01-01"}], r"ends before it starts"),
        ([{"start": "2026-01-02", "end": "2026-01-02"}], r"ends before it starts"),
        ([{"start": "soon", "end": "2026-01-01"}], r"maintenance\[1\].start must be an ISO 8601"),
        ([{"start": "2026-01-01"}], r"maintenance\[1\].end must be an ISO 8601 time"),
        ([{"from": "2026-01-01"}], r"unknown key 'from'"),
        (["02:00"], r"maintenance\[1\] must be a mapping"),
    ],
)
def test_window_spec_errors_name_the_place(spec: Any, message: str) -> None:
    """A wrong maintenance window names its position in the list and what to write."""
    with pytest.raises(ConfigError, match=message):
        windows_from_spec(spec, "f.yaml: maintenance")
