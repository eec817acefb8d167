"""When a circuit breaker opens and how it recovers: the policy, and the outcomes it judges.

An ``OutcomeWindow`` keeps the last calls of this process while the breaker is closed and names
the reason to open, if the policy finds one; ``Probes`` counts the probe calls of a half-open
episode and says whether they reopen or close the breaker; ``refusal`` tells a refused caller
when to come back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from mendflow.exceptions import ConfigError, DependencyDown
from mendflow.resilience.breaker_state import CLOSED, OPEN, BreakerState


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    """When a breaker opens and how it recovers (counts, rates in [0, 1], seconds).

    ======================  ===================================================================
    ``window``              outcomes kept: the last N calls of this process
    ``min_calls``           no opening before the window holds this many calls
    ``failure_rate``        open when failed / calls >= this
    ``slow_call_s``         a call taking longer than this is slow
    ``slow_rate``           open when slow / calls >= this (1.0: only when every call is slow)
    ``open_s``              fail fast this long, then let probes through
    ``half_open_probes``    probes admitted while half-open; all must succeed to close
    ``sync_s``              re-read the shared state at most this often
    ======================  ===================================================================
    """

    window: int = 20
    min_calls: int = 10
    failure_rate: float = 0.5
    slow_call_s: float = 10.0
    slow_rate: float = 1.0
    open_s: float = 30.0
    half_open_probes: int = 2
    sync_s: float = 1.0

    def __post_init__(self) -> None:
        checks = {
            "window": self.window >= 1,
            "min_calls": 1 <= self.min_calls <= self.window,
            "failure_rate": 0.0 < self.failure_rate <= 1.0,
            "slow_call_s": self.slow_call_s > 0.0,
            "slow_rate": 0.0 < self.slow_rate <= 1.0,
            "open_s": 0.0 <= self.open_s < float("inf"),
            "half_open_probes": self.half_open_probes >= 1,
            "sync_s": 0.0 <= self.sync_s < float("inf"),
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(
                    f"BreakerPolicy {name}={getattr(self, name)!r} is out of range; use counts "
                    f">= 1 (min_calls <= window), rates in (0, 1] and finite seconds >= 0"
                )


OK: Final = (False, False)
"""The outcome of a call that succeeded in time, as (failed, slow); one tuple for all of them."""


class OutcomeWindow:
    """The last N outcomes as (failed, slow), with running counts of failed and slow calls.

    While ``failures`` and ``slow`` are both 0 every outcome held is ``OK``, so appending ``OK``
    to ``outcomes`` keeps the counts right: the breaker's fast path does just that.
    """

    __slots__ = ("failures", "outcomes", "slow")

    def __init__(self, size: int) -> None:
        self.outcomes: deque[tuple[bool, bool]] = deque(maxlen=size)
        self.failures = 0
        self.slow = 0

    @property
    def calls(self) -> int:
        """How many outcomes the window holds."""
        return len(self.outcomes)

    def add(self, failed: bool, slow: bool) -> None:
        """Append one outcome, dropping the oldest when the window is full."""
        outcomes = self.outcomes
        if len(outcomes) == outcomes.maxlen:
            old_failed, old_slow = outcomes[0]
            self.failures -= old_failed
            self.slow -= old_slow
        outcomes.append((failed, slow) if failed or slow else OK)
        self.failures += failed
        self.slow += slow

    def clear(self) -> None:
        """Forget every outcome."""
        self.outcomes.clear()
        self.failures = self.slow = 0

    def trip_reason(self, policy: BreakerPolicy) -> str | None:
        """Why the breaker must open, or None while the rates stay below the policy's."""
        calls = self.calls
        if calls < policy.min_calls or not (self.failures or self.slow):
            return None
        rate = self.failures / calls
        if rate >= policy.failure_rate:
            return (
                f"{self.failures} of {calls} calls failed "
                f"(rate {rate:.2f} >= {policy.failure_rate:.2f})"
            )
        slow = self.slow / calls
        if slow >= policy.slow_rate:
            return (
                f"{self.slow} of {calls} calls took over {policy.slow_call_s:g} s "
                f"(rate {slow:.2f} >= {policy.slow_rate:.2f})"
            )
        return None


class Probes:
    """The probe calls of one half-open episode in this process."""

    __slots__ = ("admitted", "failed", "successes")

    def __init__(self) -> None:
        self.admitted = 0
        self.successes = 0
        self.failed = False  # a probe failed: no more probes, and no closing, in this episode

    def admit(self, policy: BreakerPolicy) -> bool:
        """Take a probe slot if one is free and no probe has failed."""
        if self.admitted < policy.half_open_probes and not self.failed:
            self.admitted += 1
            return True
        return False

    def free(self) -> None:
        """Give back the slot of a probe whose outcome says nothing about the dependency."""
        self.admitted = max(0, self.admitted - 1)

    def verdict(
        self, policy: BreakerPolicy, failed: bool, duration: float, error: str
    ) -> tuple[BreakerState, str] | None:
        """Fold in one probe's outcome; the state it moves the breaker to, and why, if any."""
        if failed or duration > policy.slow_call_s:
            self.failed = True
            if failed:
                return OPEN, f"a probe call failed ({error or 'error'})"
            return OPEN, f"a probe call took {duration:.1f} s (> {policy.slow_call_s:g} s)"
        self.successes += 1
        if self.failed or self.successes < policy.half_open_probes:
            return None
        return CLOSED, f"{self.successes} probe calls succeeded"


def refusal(
    dependency: str, policy: BreakerPolicy, reason: str, wait: float | None
) -> DependencyDown:
    """The error for a refused call: open ``wait`` seconds more because of ``reason``, or
    half-open with every probe slot taken (``wait`` None)."""
    if wait is None:
        message = (
            f"{dependency} is being probed: its circuit breaker is half-open and lets only "
            f"{policy.half_open_probes} probe calls through; retry shortly"
        )
    else:
        message = (
            f"{dependency} is failing fast: its circuit breaker opened because {reason}; "
            f"it lets a probe call through in {wait:.1f} s; retry then, or check {dependency}"
        )
    return DependencyDown(message, dependency=dependency, retry_after_s=wait)


__all__: Sequence[str] = ("OK", "BreakerPolicy", "OutcomeWindow", "Probes", "refusal")
