"""Fault injectors that prove the guarantees. Today: SIGKILL at a chosen event."""

from __future__ import annotations

import os
import signal

from mendflow.events import Event


class KillAt:
    """A hook that SIGKILLs its own process at the ``nth`` event of ``kind`` (1-based).

    ``batch.staged`` fires inside the open load transaction, so a kill there tests the commit.
    """

    def __init__(self, kind: str, nth: int = 1) -> None:
        self.kind = kind
        self.nth = nth
        self._seen = 0

    def __call__(self, event: Event) -> None:
        if event.kind != self.kind:
            return
        self._seen += 1
        if self._seen == self.nth:
            os.kill(os.getpid(), signal.SIGKILL)
