"""Prometheus metrics: every metric mendflow exposes is defined here, once.

Two sources feed them:

- ``StateCollector`` computes, at scrape time, everything the state store knows (runs, rows,
  retries, breakers, incidents, freshness, pauses, dead letters, queued jobs). Being read from the
  shared store, these are true across worker processes and machines: scrape them from one
  process (``mendflow serve``), not from every worker, or they are counted once per scraper.
- ``BatchTimer``, an event hook, observes ``mendflow_batch_duration_seconds`` in the process that
  runs the batch (from ``batch.read`` to ``batch.loaded``/``batch.skipped`` of the same batch).

    reg = registry(store, catalog)          # both, for /metrics
    body = render(reg)                      # text exposition; header CONTENT_TYPE
    hooks = [store.record, BATCH_TIMER]     # in the process that runs pipelines

Semantics worth knowing:

- ``mendflow_runs_total{outcome}`` counts finished runs (succeeded, failed, interrupted); a run
  still running is not counted yet. Every known pipeline has all three outcomes (0 if none).
- ``mendflow_rows_total{outcome}`` partitions rows: ``loaded``; ``dead_lettered`` (set aside row
  by row); ``quarantined`` (in batches set aside whole). ``mendflow_dead_letters_total`` is every
  dead letter ever set aside (dead_lettered + quarantined); replays and purges do not lower it.
- ``mendflow_retries_total`` is the number of retried calls (``mf_runs.retries``, the count of
  ``mf_attempts`` rows of the run kept with it).
- ``mendflow_pipeline_freshness_seconds`` is now minus the end of the pipeline's last successful
  run. A pipeline that has runs but never succeeded counts from the start of its first run (it
  has been without fresh data at least that long). A pipeline that never ran has no sample: there
  is no time to count from (alert on it with ``absent``/the runs count if that matters).
- ``mendflow_breaker_open_seconds`` is how long a breaker that is not closed has been so (0 when
  closed); the dependency label is masked like everything the store keeps.
- ``mendflow_time_to_recover_seconds`` is a histogram of healed incidents' recovered - detected.
- ``mendflow_state_up`` is 1 when the scrape could read the store, else 0 (and the store-derived
  metrics are missing from that scrape).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import prometheus_client
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from mendflow._redact import redact
from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.events import BatchLoaded, BatchRead, BatchSkipped, Event, RunFailed, RunFinished
from mendflow.state.schema import (
    breakers,
    events,
    incident_actions,
    incidents,
    jobs,
    runs,
    schedules,
)

if TYPE_CHECKING:
    from mendflow.server.catalog import Catalog
    from mendflow.state.store import StateStore

_log = logging.getLogger(__name__)

#: The exposition content type of ``render``'s output.
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST

RUNS = "mendflow_runs_total"
ROWS = "mendflow_rows_total"
BATCH_DURATION = "mendflow_batch_duration_seconds"
RETRIES = "mendflow_retries_total"
BREAKER_STATE = "mendflow_breaker_state"
BREAKER_OPEN = "mendflow_breaker_open_seconds"
INCIDENTS = "mendflow_incidents_total"
INCIDENT_ACTIONS = "mendflow_incident_actions_total"
TIME_TO_RECOVER = "mendflow_time_to_recover_seconds"
FRESHNESS = "mendflow_pipeline_freshness_seconds"
FRESHNESS_THRESHOLD = "mendflow_pipeline_freshness_threshold_seconds"
PAUSED = "mendflow_pipeline_paused"
DEAD_LETTERS = "mendflow_dead_letters_total"
JOBS = "mendflow_jobs"
STATE_UP = "mendflow_state_up"

#: Every metric name as exposed, with its type and labels (the rules and dashboard use these).
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    RUNS: ("counter", ("pipeline", "outcome")),
    ROWS: ("counter", ("pipeline", "outcome")),
    BATCH_DURATION: ("histogram", ("pipeline",)),
    RETRIES: ("counter", ("pipeline",)),
    BREAKER_STATE: ("gauge", ("dependency",)),
    BREAKER_OPEN: ("gauge", ("dependency",)),
    INCIDENTS: ("counter", ("pipeline", "failure_class")),
    INCIDENT_ACTIONS: ("counter", ("pipeline", "action", "outcome")),
    TIME_TO_RECOVER: ("histogram", ()),
    FRESHNESS: ("gauge", ("pipeline",)),
    FRESHNESS_THRESHOLD: ("gauge", ("pipeline",)),
    PAUSED: ("gauge", ("pipeline",)),
    DEAD_LETTERS: ("counter", ("pipeline",)),
    JOBS: ("gauge", ("pipeline", "status")),
    STATE_UP: ("gauge", ()),
}

RUN_OUTCOMES = ("succeeded", "failed", "interrupted")
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
#: Upper bounds (seconds) of the batch-duration buckets.
BATCH_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: Upper bounds (seconds) of the time-to-recover buckets.
RECOVER_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
                   21600.0, 86400.0)


class BatchTimer:
    """An event hook observing each batch's duration, ``batch.read`` to loaded or skipped.

    Times are the events' own ``at`` (the run's clock). Batches of a run that ends before they
    do are forgotten with the run."""

    def __init__(self) -> None:
        self.histogram = Histogram(
            BATCH_DURATION, "Seconds from reading a batch to committing (or skipping) it.",
            ["pipeline"], buckets=BATCH_BUCKETS, registry=None,
        )
        self._started: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        """Note a batch's start, or observe its duration when it ends."""
        if isinstance(event, BatchRead):
            with self._lock:
                self._started[(event.run_id, event.batch_id)] = event.at
        elif isinstance(event, BatchLoaded | BatchSkipped):
            with self._lock:
                started = self._started.pop((event.run_id, event.batch_id), None)
            if started is not None:
                self.histogram.labels(event.pipeline).observe(max(0.0, event.at - started))
        elif isinstance(event, RunFinished | RunFailed):
            with self._lock:
                for key in [k for k in self._started if k[0] == event.run_id]:
                    del self._started[key]


#: The process's batch timer: add it to the hooks of the runs this process executes.
BATCH_TIMER = BatchTimer()


@dataclass(slots=True)
class _Pipeline:
    """What one scrape learned of a pipeline."""

    runs: dict[str, int] = field(default_factory=dict)
    loaded: int = 0
    dead_letters: int = 0
    quarantined: int = 0
    retries: int = 0
    first_started: float | None = None
    last_success: float | None = None
    paused: bool = False
    threshold: float | None = None


class StateCollector(Collector):
    """Computes the store-derived metrics at each scrape (see the module docstring)."""

    def __init__(
        self, store: StateStore, catalog: Catalog | None = None, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        """The families ``collect`` yields, without samples (no store query at registration)."""
        return list(_families())

    def collect(self) -> Iterable[Metric]:
        """Query the store (a handful of aggregates) and yield every family."""
        up = GaugeMetricFamily(STATE_UP, "1 when this scrape could read the state store.")
        try:
            families = self._collect()
        except sa.exc.SQLAlchemyError as exc:
            _log.warning("metrics: the state store did not answer: %s", redact(str(exc)))
            up.add_metric([], 0.0)
            return [up]
        up.add_metric([], 1.0)
        return [*families, up]

    def _collect(self) -> list[Metric]:
        now = self.clock.now()
        with self.store.engine.connect() as con:
            pipes = _runs_by_pipeline(con)
            _add_quarantined(con, pipes)
            _add_paused(con, pipes)
            self._add_catalog(pipes)
            out = _pipeline_families(pipes, now)
            out += _breaker_families(con, now)
            out += _incident_families(con)
            out.append(_recover_histogram(con))
            out.append(_jobs_family(con))
        return out

    def _add_catalog(self, pipes: dict[str, _Pipeline]) -> None:
        if self.catalog is None:
            return
        for entry in self.catalog.entries():
            pipes.setdefault(entry.name, _Pipeline()).threshold = entry.freshness_s


def _families() -> Iterator[Metric]:
    """One empty family per store-derived metric (``describe``)."""
    for name, (kind, labels) in METRICS.items():
        if name == BATCH_DURATION:
            continue
        family: type[Metric] = {
            "counter": CounterMetricFamily, "gauge": GaugeMetricFamily,
            "histogram": HistogramMetricFamily,
        }[kind]
        yield family(name, name, labels=labels)  # type: ignore[call-arg]


def _runs_by_pipeline(con: sa.Connection) -> dict[str, _Pipeline]:
    """One aggregate over ``mf_runs``: runs by outcome, rows, retries, first start, last success."""
    query = sa.select(
        runs.c.pipeline, runs.c.status, sa.func.count(),
        sa.func.coalesce(sa.func.sum(runs.c.rows_loaded), 0),
        sa.func.coalesce(sa.func.sum(runs.c.dead_letters), 0),
        sa.func.coalesce(sa.func.sum(runs.c.retries), 0),
        sa.func.min(runs.c.started_at), sa.func.max(runs.c.finished_at),
    ).group_by(runs.c.pipeline, runs.c.status)
    pipes: dict[str, _Pipeline] = {}
    for name, status, count, loaded, dead, retries, first, last in con.execute(query):
        pipe = pipes.setdefault(name, _Pipeline())
        pipe.runs[status] = int(count)
        pipe.loaded += int(loaded)
        pipe.dead_letters += int(dead)
        pipe.retries += int(retries)
        pipe.first_started = first if pipe.first_started is None else min(pipe.first_started, first)
        if status == "succeeded" and last is not None:
            pipe.last_success = float(last)
    return pipes


def _add_quarantined(con: sa.Connection, pipes: dict[str, _Pipeline]) -> None:
    """Rows of batches quarantined whole (rare events, found by the (pipeline, kind) index)."""
    if not pipes:
        return
    query = sa.select(events.c.pipeline, events.c.payload).where(
        events.c.pipeline.in_(list(pipes)), events.c.kind == "batch.quarantined"
    )
    for name, payload in con.execute(query):
        pipes[name].quarantined += int(json.loads(payload).get("rows", 0))


def _add_paused(con: sa.Connection, pipes: dict[str, _Pipeline]) -> None:
    query = sa.select(schedules.c.pipeline, schedules.c.paused)
    for name, paused in con.execute(query):
        pipes.setdefault(name, _Pipeline()).paused = bool(paused)


def _pipeline_families(pipes: dict[str, _Pipeline], now: float) -> list[Metric]:
    runs_f = CounterMetricFamily(RUNS, "Finished runs by outcome.", labels=["pipeline", "outcome"])
    rows_f = CounterMetricFamily(
        ROWS, "Rows by outcome: loaded, dead_lettered (row by row), quarantined (whole batches).",
        labels=["pipeline", "outcome"],
    )
    retries_f = CounterMetricFamily(RETRIES, "Retried calls.", labels=["pipeline"])
    dead_f = CounterMetricFamily(
        DEAD_LETTERS, "Dead letters ever set aside (replays do not lower it).", labels=["pipeline"]
    )
    fresh_f = GaugeMetricFamily(
        FRESHNESS, "Seconds since the end of the last successful run.", labels=["pipeline"]
    )
    limit_f = GaugeMetricFamily(
        FRESHNESS_THRESHOLD, "The pipeline's freshness_s: how stale it may get.",
        labels=["pipeline"],
    )
    paused_f = GaugeMetricFamily(PAUSED, "1 while the pipeline is paused.", labels=["pipeline"])
    for name in sorted(pipes):
        pipe = pipes[name]
        for outcome in sorted({*RUN_OUTCOMES, *pipe.runs} - {"running"}):
            runs_f.add_metric([name, outcome], pipe.runs.get(outcome, 0))
        rows_f.add_metric([name, "loaded"], pipe.loaded)
        rows_f.add_metric([name, "dead_lettered"], max(0, pipe.dead_letters - pipe.quarantined))
        rows_f.add_metric([name, "quarantined"], pipe.quarantined)
        retries_f.add_metric([name], pipe.retries)
        dead_f.add_metric([name], pipe.dead_letters)
        since = pipe.last_success if pipe.last_success is not None else pipe.first_started
        if since is not None:
            fresh_f.add_metric([name], max(0.0, now - since))
        if pipe.threshold is not None:
            limit_f.add_metric([name], pipe.threshold)
        paused_f.add_metric([name], 1.0 if pipe.paused else 0.0)
    return [runs_f, rows_f, retries_f, dead_f, fresh_f, limit_f, paused_f]


def _breaker_families(con: sa.Connection, now: float) -> list[Metric]:
    state_f = GaugeMetricFamily(
        BREAKER_STATE, "Circuit breaker state: 0 closed, 1 half_open, 2 open.",
        labels=["dependency"],
    )
    open_f = GaugeMetricFamily(
        BREAKER_OPEN, "Seconds the breaker has not been closed (0 when closed).",
        labels=["dependency"],
    )
    query = sa.select(breakers.c.dependency, breakers.c.state, breakers.c.opened_at)
    for dependency, state, opened_at in con.execute(query):
        label = [redact(dependency)]
        state_f.add_metric(label, float(BREAKER_STATES.get(state, 2)))
        shut = state == "closed" or opened_at is None
        open_f.add_metric(label, 0.0 if shut else max(0.0, now - float(opened_at)))
    return [state_f, open_f]


def _incident_families(con: sa.Connection) -> list[Metric]:
    incidents_f = CounterMetricFamily(
        INCIDENTS, "Incidents opened, by failure class.", labels=["pipeline", "failure_class"]
    )
    query = sa.select(
        incidents.c.pipeline, incidents.c.failure_class, sa.func.count()
    ).group_by(incidents.c.pipeline, incidents.c.failure_class)
    for pipeline, failure_class, count in con.execute(query):
        incidents_f.add_metric([pipeline, failure_class], int(count))
    actions_f = CounterMetricFamily(
        INCIDENT_ACTIONS, "Healing actions taken, by action and outcome.",
        labels=["pipeline", "action", "outcome"],
    )
    joined = incident_actions.join(
        incidents, incident_actions.c.incident_id == incidents.c.incident_id
    )
    keys = (incidents.c.pipeline, incident_actions.c.action, incident_actions.c.outcome)
    query = sa.select(*keys, sa.func.count()).select_from(joined).group_by(*keys)
    for pipeline, action, outcome, count in con.execute(query):
        actions_f.add_metric([pipeline, action, outcome], int(count))
    return [incidents_f, actions_f]


def _recover_histogram(con: sa.Connection) -> Metric:
    """Healed incidents' time to recover, bucketed by the database in one aggregate."""
    took = incidents.c.recovered_at - incidents.c.detected_at
    columns = [
        sa.func.coalesce(sa.func.sum(sa.case((took <= bound, 1), else_=0)), 0)
        for bound in RECOVER_BUCKETS
    ]
    query = sa.select(
        *columns, sa.func.count(), sa.func.coalesce(sa.func.sum(took), 0.0)
    ).where(incidents.c.status == "healed", incidents.c.recovered_at.is_not(None))
    row = con.execute(query).one()
    counts, total, seconds = row[: len(RECOVER_BUCKETS)], int(row[-2]), float(row[-1])
    buckets = [(_le(b), float(c)) for b, c in zip(RECOVER_BUCKETS, counts, strict=True)]
    family = HistogramMetricFamily(
        TIME_TO_RECOVER, "Seconds from detecting an incident to its healing (healed ones)."
    )
    family.add_metric([], [*buckets, ("+Inf", float(total))], seconds)
    return family


def _jobs_family(con: sa.Connection) -> Metric:
    family = GaugeMetricFamily(
        JOBS, "Jobs queued or running, per pipeline.", labels=["pipeline", "status"]
    )
    query = (
        sa.select(jobs.c.pipeline, jobs.c.status, sa.func.count())
        .where(jobs.c.status.in_(["queued", "running"]))
        .group_by(jobs.c.pipeline, jobs.c.status)
    )
    for pipeline, status, count in con.execute(query):
        family.add_metric([pipeline, status], int(count))
    return family


def _le(bound: float) -> str:
    return str(float(bound))  # as prometheus_client writes bucket bounds: "1.0", "86400.0"


def registry(
    store: StateStore | None,
    catalog: Catalog | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    timer: BatchTimer | None = None,
) -> CollectorRegistry:
    """A registry with the store-derived metrics (when ``store`` is given) and the batch
    durations of ``timer`` (default: this process's ``BATCH_TIMER``)."""
    reg = CollectorRegistry(auto_describe=False)
    if store is not None:
        reg.register(StateCollector(store, catalog, clock=clock))
    reg.register((timer or BATCH_TIMER).histogram)
    return reg


def render(reg: CollectorRegistry) -> bytes:
    """The registry's metrics in the Prometheus text format (serve with ``CONTENT_TYPE``)."""
    return prometheus_client.generate_latest(reg)


def start_http_server(
    port: int, reg: CollectorRegistry, *, addr: str = "127.0.0.1"
) -> tuple[Any, threading.Thread]:
    """Serve ``reg`` on ``http://addr:port/metrics`` from a daemon thread (for a worker
    process: give it ``registry(None)``, its batch durations only); return (server, thread)."""
    server, thread = prometheus_client.start_http_server(port, addr=addr, registry=reg)
    return server, thread


__all__: Sequence[str] = (
    "BATCH_TIMER", "CONTENT_TYPE", "METRICS", "BatchTimer", "StateCollector", "registry",
    "render", "start_http_server",
)
