"""Batch checks: audits of a batch inside its load transaction, before it is published.

Write-audit-publish: the sink inserts a batch's rows and dead letters in one transaction, shows
the checks an ``Audit`` of it, and commits only when no blocking check failed. A failed blocking
check raises ``CheckFailed``: the transaction rolls back (rows, dead letters, schema changes,
checkpoint), and healing quarantines the batch whole into the dead-letter store. A failed warning
is recorded as a ``check.ran`` event and the batch commits.

    Pipeline(..., checks=[
        UniqueKey(("id",)),
        NullRate("email", max_rate=0.05, blocking=False),
        Volume(z=3.5),                                    # a warning unless blocking=True
        Freshness("updated_at", max_age_s=86_400),
    ])

=================  ==========================================================  ===========
check              passes when                                                 default
=================  ==========================================================  ===========
Reconciliation     records read = rows loaded + dead letters (always run)      blocking
UniqueKey          no key of the batch is held by two rows of the table        blocking
NullRate           nulls in the column / rows of the batch <= max_rate         blocking
Volume             robust z-score of the batch's rows vs. history within z     warning
Freshness          now - newest value of the column <= max_age_s               blocking
=================  ==========================================================  ===========

A load that publishes no rows (a quarantined batch, a batch whose every record is a dead letter)
is audited by ``Reconciliation`` alone: there is nothing to judge, and judging the quarantined
batch again would fail it again. ``checks_from_spec`` builds checks from a pipeline file's
``checks:`` list.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mendflow._arrow import newest_epoch
from mendflow._validate import describe, suggest
from mendflow.batch import Audit, Finding
from mendflow.exceptions import ConfigError
from mendflow.typing import Check

__all__ = [
    "Freshness",
    "NullRate",
    "Reconciliation",
    "UniqueKey",
    "Volume",
    "checks_from_spec",
    "robust_z",
]


def _finding(check: Check, passed: bool, message: str) -> Finding:
    return Finding(check=check.name, blocking=check.blocking, passed=passed, message=message)


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """Every record read is accounted for: records read = rows loaded + dead letters.

    The sink runs it on every load, listed or not: it is the exactly-once invariant, and it
    cannot be turned off. A failure means records were lost or made up between reading and
    loading: a defect to report, not a data problem.
    """

    blocking: bool = True

    @property
    def name(self) -> str:
        """``reconciliation``."""
        return "reconciliation"

    def check(self, audit: Audit) -> Finding:
        """Compare the records read with the rows and dead letters of the load."""
        accounted = audit.rows_loaded + audit.dead_letters
        if accounted == audit.records_read:
            return _finding(self, True, f"{audit.records_read} records read, all accounted for")
        return _finding(
            self, False,
            f"{audit.records_read} records read but {audit.rows_loaded} rows loaded + "
            f"{audit.dead_letters} dead letters = {accounted}; records were "
            f"{'lost' if accounted < audit.records_read else 'made up'} on the way. This is a "
            "defect: report it with the batch id; the batch was not published.",
        )


@dataclass(frozen=True, slots=True)
class UniqueKey:
    """No key of the batch is held by more than one row of the table once the batch is in.

    Only the batch's keys are looked up (a semi-join in the destination), never the whole table;
    rows with a null in the key are not keys and are not counted.
    """

    columns: tuple[str, ...]
    blocking: bool = True

    def __post_init__(self) -> None:
        columns = (self.columns,) if isinstance(self.columns, str) else tuple(self.columns)
        if not columns or not all(isinstance(c, str) and c for c in columns):
            raise ConfigError(f"UniqueKey needs one or more column names, not {self.columns!r}.")
        object.__setattr__(self, "columns", columns)

    @property
    def name(self) -> str:
        """``unique_key(col, ...)``."""
        return f"unique_key({', '.join(self.columns)})"

    def check(self, audit: Audit) -> Finding:
        """Count the batch's keys that more than one row of the table holds."""
        missing = [c for c in self.columns if c not in audit.data.column_names]
        if missing:
            return _finding(self, False, _absent(missing[0], audit))
        duplicates = audit.duplicate_keys(self.columns)
        if not duplicates:
            return _finding(self, True, f"every key of the batch is unique in {audit.table}")
        return _finding(
            self, False,
            f"{duplicates} key(s) of this batch are held by more than one row of {audit.table} "
            "(limit 0). Find where the duplicates come from (a batch loaded twice under "
            "another id, append where merge was meant); to replace rows by key, use "
            "write_mode merge.",
        )


@dataclass(frozen=True, slots=True)
class NullRate:
    """The share of nulls in ``column`` among the batch's loaded rows is at most ``max_rate``."""

    column: str
    max_rate: float
    blocking: bool = True

    def __post_init__(self) -> None:
        _check_column(self.column, "NullRate")
        if not 0 <= self.max_rate <= 1 or isinstance(self.max_rate, bool):
            raise ConfigError(f"NullRate max_rate must be within 0..1, not {self.max_rate!r}.")

    @property
    def name(self) -> str:
        """``null_rate(column)``."""
        return f"null_rate({self.column})"

    def check(self, audit: Audit) -> Finding:
        """Count nulls from the Arrow null bitmaps (no pass over the values)."""
        rows = audit.data.num_rows
        if self.column not in audit.data.column_names:
            return _finding(self, False, _absent(self.column, audit))
        nulls = audit.data.column(self.column).null_count
        rate = nulls / rows if rows else 0.0
        measured = f"{nulls} of {rows} rows ({rate:.2%}) have no {self.column}"
        if rate <= self.max_rate:
            return _finding(self, True, f"{measured}; limit {self.max_rate:.2%}")
        return _finding(
            self, False,
            f"{measured}, over the limit of {self.max_rate:.2%}. Look at the source for the "
            f"missing values; if they are expected, raise max_rate.",
        )


@dataclass(frozen=True, slots=True)
class Volume:
    """The batch's row count is no outlier against the pipeline's own recent batches.

    Robust z-score ``0.6745 * (rows - median) / MAD`` over the row counts of the last ``window``
    committed batches that loaded rows; ``|z| > z`` fails. It passes (and says so) while fewer
    than ``min_history`` batches are known. A warning by default: an outlier is a hint, not a
    proof. It suits batches that are natural units (a file, a day's sync); with fixed-size
    chunks, the short last chunk of a file stands out.
    """

    z: float = 3.5
    min_history: int = 5
    window: int = 30
    blocking: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.z, bool) or not self.z > 0:
            raise ConfigError(f"Volume z must be a number above 0, not {self.z!r}.")
        if not 2 <= self.min_history <= self.window:
            raise ConfigError(
                f"Volume needs 2 <= min_history <= window, not min_history={self.min_history}, "
                f"window={self.window}."
            )

    @property
    def name(self) -> str:
        """``volume``."""
        return "volume"

    def check(self, audit: Audit) -> Finding:
        """Score the batch's row count against the history's median and MAD."""
        history = list(audit.history)[-self.window :]
        rows = audit.rows_loaded
        if len(history) < self.min_history:
            return _finding(
                self, True,
                f"skipped: {len(history)} earlier batches known, {self.min_history} needed",
            )
        score = robust_z(rows, history)
        median = statistics.median(history)
        measured = (
            f"{rows} rows against a median of {median:g} over the last {len(history)} batches: "
            f"robust z-score {score:+.2f}, limit ±{self.z:g}"
        )
        if abs(score) <= self.z:
            return _finding(self, True, measured)
        return _finding(
            self, False,
            f"{measured}. Check the source for missing or duplicated data; if the volume "
            "really changed, raise z (the history adapts as new batches commit).",
        )


def robust_z(value: float, history: Sequence[float]) -> float:
    """``0.6745 * (value - median) / MAD`` of ``history``.

    When over half the history is equal (MAD 0), the mean absolute deviation stands in
    (``(value - median) / (1.253314 * meanAD)``); when the history is constant, any other value
    is infinitely far (``±inf``) and the same value is 0.
    """
    median = statistics.median(history)
    deviations = [abs(h - median) for h in history]
    mad = statistics.median(deviations)
    if mad > 0:
        return 0.6745 * (value - median) / mad
    mean_ad = statistics.fmean(deviations)
    if mean_ad > 0:
        return (value - median) / (1.253314 * mean_ad)
    return 0.0 if value == median else math.copysign(math.inf, value - median)


@dataclass(frozen=True, slots=True)
class Freshness:
    """The newest value of timestamp ``column`` in the batch is at most ``max_age_s`` old.

    Timestamps without a time zone are taken as UTC; dates as their midnight; strings are read
    as ISO 8601. The age is measured from the run's clock.
    """

    column: str
    max_age_s: float
    blocking: bool = True

    def __post_init__(self) -> None:
        _check_column(self.column, "Freshness")
        if isinstance(self.max_age_s, bool) or not self.max_age_s > 0:
            raise ConfigError(
                f"Freshness max_age_s must be a number of seconds above 0, not {self.max_age_s!r}."
            )

    @property
    def name(self) -> str:
        """``freshness(column)``."""
        return f"freshness({self.column})"

    def check(self, audit: Audit) -> Finding:
        """Take the column's maximum and compare its age with the limit."""
        if self.column not in audit.data.column_names:
            return _finding(self, False, _absent(self.column, audit))
        newest = newest_epoch(audit.data.column(self.column))
        if isinstance(newest, str):
            return _finding(self, False, newest)
        age = audit.now - newest
        measured = f"newest {self.column} is {age:,.0f}s old, limit {self.max_age_s:,g}s"
        if age <= self.max_age_s:
            return _finding(self, True, measured)
        return _finding(
            self, False,
            f"{measured}. The source may be serving stale data: check that it is still "
            "updated; if this lag is normal, raise max_age_s.",
        )


def _absent(column: str, audit: Audit) -> str:
    return (
        f"the batch has no column {column!r}{suggest(column, set(audit.data.column_names))}; "
        "fix the check's column name, or the source that stopped sending it."
    )


def _check_column(column: Any, what: str) -> None:
    if not isinstance(column, str) or not column:
        raise ConfigError(f"{what} needs a column name, not {describe(column)}.")


def checks_from_spec(spec: Any, where: str) -> tuple[Check, ...]:
    """Build checks from a pipeline file's ``checks:`` list; see ``mendflow._checks_spec``."""
    from mendflow._checks_spec import checks_from_spec as build  # it imports the classes above

    return build(spec, where)
