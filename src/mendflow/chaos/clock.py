"""A clock whose waits take no time: chaos runs wait only on paper.

``sleep(s)`` moves the clock ``s`` seconds ahead at once instead of waiting, so backoffs,
``Retry-After`` waits, open breakers and injected latency cost nothing in wall time, while every
duration the pipeline measures (incident detection to recovery, breaker open windows) is what it
would have been for real. The offset lives in the run's ``Journal``, so a process restarted after
a kill goes on at the time the killed one had reached (breaker states in the state store stay in
the past, as they would).
"""

from __future__ import annotations

import time

from mendflow.chaos.journal import Journal

__all__ = ["VirtualClock"]


class VirtualClock:
    """Real time plus every wait asked for so far (a ``mendflow.clock.Clock``)."""

    def __init__(self, journal: Journal | None = None) -> None:
        self.journal = journal or Journal()

    def now(self) -> float:
        """Wall-clock seconds since the epoch, plus the waits so far."""
        return time.time() + self.journal.offset_s

    def monotonic(self) -> float:
        """Monotonic seconds, plus the waits so far."""
        return time.monotonic() + self.journal.offset_s

    def sleep(self, seconds: float) -> None:
        """Return at once, ``seconds`` later on this clock."""
        if seconds > 0:
            self.journal.advance(seconds)

    @property
    def waited_s(self) -> float:
        """Seconds of waiting skipped so far."""
        return self.journal.offset_s
