"""One attempt of a chaos run, in a process of its own (which a ``kill`` fault may SIGKILL).

The pipeline is loaded from its file, pointed at the seed's fresh destination, and wrapped:
the source in ``FaultySource`` (an HTTP source also gets a ``FaultyTransport``, which injects
the request-level faults instead), the sink in ``FaultySink``, the process in
``ProcessKiller``; every wait goes through a ``VirtualClock``. It runs under ``run_healing``;
pages are noted in the journal. Exit 0: the run succeeded; ``ESCALATED``: healing gave up.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mendflow import config
from mendflow._config_sinks import destination
from mendflow.chaos._kill import ProcessKiller
from mendflow.chaos.clock import VirtualClock
from mendflow.chaos.journal import Journal
from mendflow.chaos.plan import SOURCE_DELAYS, SOURCE_ERRORS, FaultPlan
from mendflow.chaos.sink import FaultySink
from mendflow.chaos.source import FaultySource
from mendflow.chaos.transport import FaultyTransport
from mendflow.exceptions import ConfigError, MendflowError
from mendflow.remediation.escalation import Alert
from mendflow.remediation.supervisor import run_healing
from mendflow.sources.http import HttpSource
from mendflow.state.store import StateStore
from mendflow.typing import Sink, Source

__all__ = ["ESCALATED", "Job", "attempt"]

ESCALATED = 3


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """What one attempt runs: the pipeline file, where it loads, and the faults."""

    pipeline_file: str
    destination: Mapping[str, Any]
    state: str
    journal: str
    plan: FaultPlan
    key: tuple[str, ...] = ()
    column: str | None = None
    #: ``module:function`` taking the sink and returning a sink to use instead (a test seam).
    wrap_sink: str | None = None


class _Pages:
    """A notifier that notes every alert in the journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def notify(self, alert: Alert) -> None:
        self.journal.note("page", kind=alert.kind, incident=alert.incident_id,
                          failure_class=alert.failure_class)


def attempt(job: Job) -> None:
    """Run the job's pipeline once under healing; exit with 0 or ``ESCALATED``."""
    journal = Journal(Path(job.journal))
    clock = VirtualClock(journal)
    spec = config.load(job.pipeline_file)
    sink: Sink = destination(dict(job.destination), spec.path.parent, "chaos destination")
    if job.wrap_sink:
        sink = _imported(job.wrap_sink)(sink)
    pipeline = dataclasses.replace(
        spec.pipeline,
        source=_source(spec.pipeline.source, job, journal, clock),
        destination=FaultySink(sink, job.plan, journal=journal, clock=clock),
    )
    store = StateStore(job.state)
    try:
        run_healing(pipeline, store=store, healing=spec.healing, notifiers=[_Pages(journal)],
                    hooks=[ProcessKiller(job.plan, journal=journal)], clock=clock)
    except MendflowError as exc:
        journal.note("failed", error=type(exc).__name__, message=str(exc)[:500])
        sys.exit(ESCALATED)
    finally:
        store.close()


def _source(source: Source, job: Job, journal: Journal, clock: VirtualClock) -> Source:
    """The source with its faults: request-level ones in the transport of an HTTP source."""
    plan = job.plan
    if isinstance(source, HttpSource):
        at_request = plan.of((*SOURCE_ERRORS, *SOURCE_DELAYS))
        http = copy.copy(source)
        http.transport = FaultyTransport(
            source.transport, FaultPlan(plan.seed, at_request), journal=journal, clock=clock)
        http.clock = clock
        rest = tuple(f for f in plan.faults if f not in at_request)
        source, plan = http, FaultPlan(plan.seed, rest)
    return FaultySource(source, plan, journal=journal, clock=clock, key=job.key,
                        column=job.column)


def _imported(ref: str) -> Callable[[Sink], Sink]:
    module, _, name = ref.partition(":")
    try:
        found: Callable[[Sink], Sink] = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"cannot import sink wrapper {ref!r}: {exc}; check the name.") from exc
    return found
