"""Time, injected: the runner and the retry loop ask a clock, so tests can use a fake one."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Where mendflow reads the time and waits."""

    def now(self) -> float:
        """Wall-clock seconds since the epoch, for records."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, for durations and deadlines."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()
