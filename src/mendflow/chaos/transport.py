"""An httpx transport wrapper that misbehaves at request level: ``FaultyTransport(inner, plan)``.

The seam httpx gives every client (``HttpSource(..., transport=...)``): the source sees real
HTTP answers and real httpx errors, translated by its own code, and heals them with its own
retries and breaker. Each request is counted (across restarts, in the journal); a fault fires at
the request it is due at:

=============== ==============================================================================
``http_5xx``    the status (500/502/503/504) with a JSON error body
``rate_limit``  429 with ``Retry-After: <seconds>``
``timeout``     ``httpx.ReadTimeout`` after ``seconds`` on the clock
``reset``       ``httpx.ReadError`` (connection reset by peer)
``permanent``   401 with a JSON error body, on every request until cleared
``latency``     the answer ``seconds`` late; ``slow``: ``span`` answers in a row late
=============== ==============================================================================
"""

from __future__ import annotations

import httpx

from mendflow.chaos.journal import Journal
from mendflow.chaos.plan import SOURCE_DELAYS, SOURCE_ERRORS, Fault, FaultPlan
from mendflow.chaos.source import error_due
from mendflow.clock import SYSTEM_CLOCK, Clock

__all__ = ["FaultyTransport"]


class FaultyTransport(httpx.BaseTransport):
    """``inner`` (the real transport by default), with the request faults of ``plan``."""

    def __init__(
        self,
        inner: httpx.BaseTransport | None,
        plan: FaultPlan,
        *,
        journal: Journal | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.inner = inner or httpx.HTTPTransport()
        self.plan = plan
        self.journal = journal or Journal()
        self.clock = clock

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Answer as ``inner`` does, unless a fault is due at this request."""
        number, journal = self.journal.count("request"), self.journal
        for fault in self.plan.of(SOURCE_DELAYS):
            if number >= fault.at and journal.value(f"done:{fault.id}") < fault.span:
                journal.fire(fault.id, fault.kind)
                journal.count(f"done:{fault.id}")
                self.clock.sleep(fault.seconds)
        for fault in self.plan.of(SOURCE_ERRORS):
            if error_due(journal, fault, number):
                journal.fire(fault.id, fault.kind)
                return self._misbehave(fault, request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        """Close the inner transport."""
        self.inner.close()

    def _misbehave(self, fault: Fault, request: httpx.Request) -> httpx.Response:
        body = {"error": f"injected by mendflow chaos ({fault.id})"}
        if fault.kind == "timeout":
            self.clock.sleep(fault.seconds)
            raise httpx.ReadTimeout("timed out (injected by mendflow chaos)", request=request)
        if fault.kind == "reset":
            raise httpx.ReadError("[Errno 104] Connection reset by peer (injected)",
                                  request=request)
        if fault.kind == "rate_limit":
            return httpx.Response(429, headers={"Retry-After": f"{fault.seconds:.0f}"},
                                  json=body, request=request)
        return httpx.Response(fault.status or 503, json=body, request=request)
