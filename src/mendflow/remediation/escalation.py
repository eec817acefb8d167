"""Paging a human: one alert when healing is spent, one notice when the incident heals.

A notifier has one method, ``notify(alert)``. ``WebhookNotifier`` posts JSON that Slack-style
incoming webhooks accept (a ``text`` field) with the structured alert beside it; ``LogNotifier``
writes to the ``mendflow.escalation`` logger. A notifier that fails is logged, never raised: a
broken pager must not break the pipeline, and the ledger holds the escalation either way.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import httpx

log = logging.getLogger("mendflow.escalation")


@dataclass(frozen=True, slots=True)
class Alert:
    """What a human is told: ``kind`` is ``escalated`` or ``resolved``."""

    kind: str
    incident_id: str
    pipeline: str
    failure_class: str
    dependency: str
    message: str
    actions: tuple[str, ...] = field(default_factory=tuple)

    @property
    def text(self) -> str:
        """One line for a chat channel."""
        if self.kind == "resolved":
            return f"RESOLVED mendflow {self.pipeline}: incident {self.incident_id[:8]} healed."
        tried = ", ".join(self.actions) or "nothing (not healable)"
        return (
            f"ESCALATED mendflow {self.pipeline}: {self.failure_class} on "
            f"{self.dependency or 'the pipeline'}: {self.message} Tried: {tried}. "
            f"Incident {self.incident_id[:8]}."
        )


class Notifier(Protocol):
    """Somewhere alerts go."""

    def notify(self, alert: Alert) -> None:
        """Deliver ``alert``; must not raise."""
        ...


class LogNotifier:
    """Alerts as log records (error for escalations, info for resolutions)."""

    def notify(self, alert: Alert) -> None:
        level = logging.INFO if alert.kind == "resolved" else logging.ERROR
        log.log(level, alert.text, extra={"alert": asdict(alert)})


class WebhookNotifier:
    """POST each alert as JSON to ``url``."""

    def __init__(
        self, url: str, *, timeout_s: float = 5.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.transport = transport

    def notify(self, alert: Alert) -> None:
        body: dict[str, Any] = {"text": alert.text, "mendflow": asdict(alert)}
        try:
            with httpx.Client(transport=self.transport, timeout=self.timeout_s) as client:
                client.post(self.url, json=body).raise_for_status()
        except httpx.HTTPError as exc:
            log.error("could not deliver alert to webhook %s: %s", _safe(self.url), exc)


def _safe(url: str) -> str:
    """The URL without its path and query, which often hold the webhook's secret."""
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}"
