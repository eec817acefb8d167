"""``mendflow serve``: the scheduler, workers, JSON API, webhook, metrics and dashboard.

    mendflow serve pipelines/ --state postgresql://... --port 8470 --workers 2 \\
        --token-file /etc/mendflow/token

One process: uvicorn serves the app (``server.app``) on the main thread while a scheduler
thread queues due runs and ``--workers`` worker threads take them from the state store (the
same loop as ``mendflow worker``), reaping runs whose heartbeat stopped for
``--lease-timeout-s``. SIGTERM or SIGINT stops the server, then the threads (each finishes
the job it holds), and the command exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from mendflow.exceptions import ConfigError

if TYPE_CHECKING:
    from mendflow.server.control import Control
    from mendflow.typing import Hook

_STATE_HELP = "State store URL (default: the pipelines' `state:`, $MENDFLOW_STATE_URL, or " \
              "sqlite:///.mendflow/state.db)."
_JOIN_S = 30.0
log = logging.getLogger("mendflow.server")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--state", "state_url", default=None, help=_STATE_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8470, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(0, 256),
              help="Worker threads running queued jobs (0: only queue them).")
@click.option("--lease-timeout-s", default=30.0, show_default=True,
              type=click.FloatRange(min=0.1),
              help="A running job silent this long is lost and relaunched.")
@click.option("--token-file", default=None, type=click.Path(dir_okay=False),
              help="File holding the API token (default: $MENDFLOW_API_TOKEN).")
@click.option("--log-format", default="json", show_default=True,
              type=click.Choice(["json", "text"]), help="Log lines as JSON or as text.")
def serve(
    paths: tuple[str, ...], state_url: str | None, host: str, port: int, workers: int,
    lease_timeout_s: float, token_file: str | None, log_format: str,
) -> None:
    """Serve the pipelines in PATHS (YAML files or folders of them)."""
    try:
        import uvicorn

        from mendflow import logs
        from mendflow.server.app import create_app
    except ImportError as exc:  # FastAPI, uvicorn, structlog come with the server extra
        raise ConfigError(f"mendflow serve needs the server extra ({exc}); install it with "
                          "pip install 'mendflow[server]'.") from None
    from mendflow.server.auth import ENV, load_token
    from mendflow.server.catalog import Catalog
    from mendflow.server.control import Control
    from mendflow.state.store import StateStore, default_state_url

    logs.configure(json=log_format == "json",
                   loggers=("mendflow", "uvicorn"))
    catalog = Catalog.load(paths)
    if not len(catalog):
        raise ConfigError(f"no pipeline files (*.yaml, *.yml) in {', '.join(paths)}; point "
                          "mendflow serve at pipeline files or folders holding them.")
    token = load_token(token_file)
    if token:
        logs.add_secret(token)
    else:
        log.warning("no API token is configured: every action is refused; set %s or pass "
                    "--token-file", ENV)
    store = StateStore(state_url or catalog.state() or default_state_url())
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        control = Control(store, catalog)
        app = create_app(control, token=token)
        server = uvicorn.Server(uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=True, lifespan="off",
        ))
        threads = _background(control, workers=workers, lease_timeout_s=lease_timeout_s,
                              stop=stop)
        log.info("serving %d pipelines on http://%s:%d with %d workers (state %s)",
                 len(catalog), host, port, workers, store.url)
        with _stopping(lambda: _exit(server, stop)):
            try:
                server.run()
            except SystemExit:  # uvicorn exits when it cannot bind
                raise ConfigError(f"could not listen on {host}:{port} (see the log above); "
                                  "pick another --port or stop what holds it.") from None
    finally:
        stop.set()
        _join(threads)
        store.close()


def _background(
    control: Control, *, workers: int, lease_timeout_s: float, stop: threading.Event
) -> list[threading.Thread]:
    """Start the scheduler and worker threads (they end when ``stop`` is set; a worker ends
    once the job it holds is done)."""
    from mendflow import logs, metrics
    from mendflow.server.scheduler import Scheduler
    from mendflow.server.worker import Worker, default_name

    scheduler = Scheduler(control, control.catalog, control.clock,
                          lease_timeout_s=lease_timeout_s)
    threads = [threading.Thread(target=scheduler.run_forever, args=(stop,),
                                name="mendflow-scheduler", daemon=True)]
    hooks: list[Hook] = [logs.LogHook(), metrics.BATCH_TIMER]
    for n in range(workers):
        worker = Worker(control.store, control.catalog, name=default_name(),
                        lease_timeout_s=lease_timeout_s, clock=control.clock, hooks=hooks)
        threads.append(threading.Thread(target=worker.run_forever, args=(stop,),
                                        name=f"mendflow-worker-{n + 1}", daemon=True))
    for thread in threads:
        thread.start()
    return threads


def _exit(server: Any, stop: threading.Event) -> None:
    stop.set()
    server.should_exit = True


class _stopping:  # noqa: N801 - used as a context manager, named like one
    """Route SIGTERM and SIGINT to ``on_signal`` for the block (uvicorn captures them while it
    runs and raises them again after its shutdown: they land here, not in the default action)."""

    def __init__(self, on_signal: Callable[[], None]) -> None:
        self._on_signal = on_signal
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, sig: int, frame: FrameType | None) -> None:
        self._on_signal()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _join(threads: Sequence[threading.Thread]) -> None:
    for thread in threads:
        thread.join(_JOIN_S)
        if thread.is_alive():
            log.warning("thread %s did not stop within %g s", thread.name, _JOIN_S)
