"""``mendflow worker``: take queued runs from the state store and run them.

    mendflow worker pipelines/ --state postgresql://... --lease-timeout-s 30

Start as many as you like, on one machine or several, over the same pipelines and state store:
each job is run by one of them, a pipeline by one at a time (``server/worker.py``). Jobs are
queued by ``mendflow serve`` (its scheduler, the API, the Alertmanager webhook) or by
``JobQueue.enqueue``. A worker reaps jobs whose worker stopped heartbeating for
``--lease-timeout-s`` and relaunches them from their checkpoint.

SIGTERM or SIGINT: the worker claims no more jobs, finishes the one it is running, and exits 0.
A second signal interrupts that job at its next batch step: it ends ``failed``, a relaunch is
queued for another worker, and the command exits 130. A third exits at once (130); the job is
then reaped after the lease timeout and relaunched, as for a worker that died.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click

from mendflow.exceptions import ConfigError

_STATE_HELP = ("State store URL (default: the pipelines' `state:`, $MENDFLOW_STATE_URL, or "
               "sqlite:///.mendflow/state.db).")
log = logging.getLogger("mendflow.worker")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--state", "state_url", default=None, help=_STATE_HELP)
@click.option("--name", default=None, help="Worker id in jobs and the ledger [host:pid:1].")
@click.option("--lease-timeout-s", default=30.0, show_default=True,
              type=click.FloatRange(min=0.1),
              help="A running job silent this long is lost and relaunched.")
@click.option("--heartbeat-s", default=None, type=click.FloatRange(min=0.01),
              help="Seconds between heartbeats [a third of the lease timeout].")
@click.option("--poll-s", default=1.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Seconds between looks at the queue when it is empty.")
@click.option("--max-jobs", default=None, type=click.IntRange(min=1),
              help="Exit after running this many jobs.")
@click.option("--metrics-port", default=None, type=click.IntRange(0, 65535),
              help="Serve this worker's batch durations on http://127.0.0.1:PORT/metrics.")
@click.option("--log-format", default="json", show_default=True,
              type=click.Choice(["json", "text"]), help="Log lines as JSON or as text.")
def worker(
    paths: tuple[str, ...], state_url: str | None, name: str | None, lease_timeout_s: float,
    heartbeat_s: float | None, poll_s: float, max_jobs: int | None, metrics_port: int | None,
    log_format: str,
) -> None:
    """Run queued jobs of the pipelines in PATHS (YAML files or folders of them)."""
    from mendflow.server.catalog import Catalog
    from mendflow.server.worker import Worker
    from mendflow.state.store import StateStore, default_state_url

    hooks = _observability(log_format, metrics_port)
    catalog = Catalog.load(paths)
    if not len(catalog):
        raise ConfigError(f"no pipeline files (*.yaml, *.yml) in {', '.join(paths)}; point "
                          "mendflow worker at pipeline files or folders holding them.")
    if heartbeat_s is not None and heartbeat_s >= lease_timeout_s:
        raise ConfigError(f"--heartbeat-s {heartbeat_s:g} must be shorter than "
                          f"--lease-timeout-s {lease_timeout_s:g}; heartbeat a few times per "
                          "timeout.")
    store = StateStore(state_url or catalog.state() or default_state_url())
    try:
        runner = Worker(store, catalog, name=name, lease_timeout_s=lease_timeout_s,
                        heartbeat_s=heartbeat_s, poll_s=poll_s, hooks=hooks)
        stop = threading.Event()
        log.info("worker %s serving %d pipelines (state %s)", runner.name, len(catalog),
                 store.url)
        with _signals(stop, runner.interrupt):
            done = runner.run_forever(stop, max_jobs=max_jobs)
        log.info("worker %s stops after %d jobs", runner.name, done)
    finally:
        store.close()


def _observability(log_format: str, metrics_port: int | None) -> list[Any]:
    """JSON (or text) logs with every run event, and the batch-duration metrics when asked."""
    try:
        from mendflow import logs
    except ImportError as exc:  # structlog comes with the server extra
        raise ConfigError(f"mendflow worker needs the server extra ({exc}); install "
                          "mendflow[server].") from None
    logs.configure(json=log_format == "json")
    hooks: list[Any] = [logs.LogHook()]
    if metrics_port is not None:
        from mendflow import metrics

        hooks.append(metrics.BATCH_TIMER)
        try:
            metrics.start_http_server(metrics_port, metrics.registry(None))
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on 127.0.0.1:{metrics_port} ({exc}); "
                              "pick another --metrics-port.") from None
    return hooks


@contextmanager
def _signals(stop: threading.Event, interrupt: Callable[[], None]) -> Iterator[None]:
    """First SIGTERM/SIGINT: stop after the current job. Second: interrupt it. Third: exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = itertools.count(1)

    def handle(sig: int, frame: FrameType | None) -> None:
        name, nth = signal.Signals(sig).name, next(received)
        if nth == 1:
            stop.set()
            log.warning("%s: finishing the current job, then exiting (send it again to "
                        "interrupt the job)", name)
        elif nth == 2:
            interrupt()
            log.warning("%s again: interrupting the current job at its next step (a third "
                        "signal exits at once)", name)
        else:
            os._exit(130)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
