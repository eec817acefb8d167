"""A destination wrapper that injects outages and latency: ``FaultySink(sink, plan)``.

An ``outage`` makes ``span`` writes in a row fail with ``DestinationUnavailable``, counted from
the write it starts at; when its ``pick`` is odd, the first failure happens inside the open load
transaction (after the rows are staged, before COMMIT), so the sink must roll the batch back.
``sink_latency`` makes one write late on the injected clock. Nothing else changes: positions,
``finish`` and ``close`` go straight to the wrapped sink.
"""

from __future__ import annotations

from collections.abc import Callable

from mendflow.batch import Committed, Load, Position
from mendflow.chaos.journal import Journal
from mendflow.chaos.plan import Fault, FaultPlan
from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.exceptions import DestinationUnavailable
from mendflow.typing import Sink

__all__ = ["FaultySink"]


class FaultySink:
    """``inner``, with the sink faults of ``plan`` injected (a ``mendflow.typing.Sink``)."""

    def __init__(
        self,
        inner: Sink,
        plan: FaultPlan,
        *,
        journal: Journal | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.inner = inner
        self.plan = plan
        self.journal = journal or Journal()
        self.clock = clock
        self.name: str = inner.name

    def position(self, pipeline: str, *, mode: str = "append") -> Position:
        """The wrapped sink's committed position."""
        return self.inner.position(pipeline, mode=mode)

    def write(
        self, load: Load, *, on_staged: Callable[[], None] = lambda: None
    ) -> Committed | None:
        """Write through, unless an outage is under way (or starts inside this write)."""
        written = self.journal.count("write")
        for fault in self.plan.of(("sink_latency",)):
            if written >= fault.at and not self.journal.fired(fault.id):
                self.journal.fire(fault.id, fault.kind)
                self.clock.sleep(fault.seconds)
        for fault in self.plan.of(("outage",)):
            failed = self.journal.value(f"done:{fault.id}")
            if written < fault.at or failed >= fault.span:
                continue
            self.journal.fire(fault.id, fault.kind)
            self.journal.count(f"done:{fault.id}")
            if failed == 0 and fault.pick % 2:
                return self.inner.write(load, on_staged=self._fail_after(on_staged, fault))
            raise self._down(fault, failed + 1)
        return self.inner.write(load, on_staged=on_staged)

    def finish(self, pipeline: str, *, mode: str = "append") -> None:
        """Publish through the wrapped sink."""
        self.inner.finish(pipeline, mode=mode)

    def close(self) -> None:
        """Close the wrapped sink."""
        self.inner.close()

    def _fail_after(self, on_staged: Callable[[], None], fault: Fault) -> Callable[[], None]:
        def staged() -> None:
            on_staged()
            raise self._down(fault, 1)

        return staged

    def _down(self, fault: Fault, nth: int) -> DestinationUnavailable:
        return DestinationUnavailable(
            f"{self.name}: outage injected by mendflow chaos (seed {self.plan.seed}, "
            f"{fault.id}, failure {nth} of {fault.span}); the batch is held and retried.",
            dependency=self.name,
        )
