"""Helpers for tests that need real binaries, sockets and servers on 127.0.0.1.

- ``binary(name)``: the path of an installed program; missing, the test is skipped (or fails under
  ``MENDFLOW_REQUIRE_SERVICES=1``, as in CI) with the Debian package to install;
- ``free_port()``: a TCP port nobody listens on right now;
- ``wait_until(predicate, timeout_s, what=...)``: poll until true, else ``AssertionError(what)``;
- ``serve_app(app)``: run an ASGI app under uvicorn in a background thread, yield its base URL.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

#: The Debian package that ships each binary the tests run.
PACKAGES: dict[str, str] = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
    "chromium": "chromium",
    "pg_ctl": "postgresql",
}


def required() -> bool:
    """True when missing services must fail tests instead of skipping them (CI)."""
    return os.environ.get("MENDFLOW_REQUIRE_SERVICES") == "1"


def unavailable(why: str) -> None:
    """Skip the test for ``why``, or fail it under ``MENDFLOW_REQUIRE_SERVICES=1``."""
    if required():
        pytest.fail(f"required by MENDFLOW_REQUIRE_SERVICES=1 but {why}")
    pytest.skip(why)


def binary(name: str) -> str:
    """The path of program ``name`` on PATH (skips or fails the test when it is missing)."""
    path = shutil.which(name)
    if path is None:
        package = PACKAGES.get(name, name)
        unavailable(f"{name} is not installed: apt-get install {package}")
        raise AssertionError("unreachable")  # pragma: no cover  skip/fail raise
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any],
    timeout_s: float,
    interval_s: float = 0.1,
    what: str = "condition",
) -> Any:
    """Call ``predicate`` until it returns something truthy (returned); after ``timeout_s``
    raise ``AssertionError`` naming ``what``. Exceptions from the predicate count as false."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001  a server not up yet, a row not there yet
            last_error = exc
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}{detail}")
        time.sleep(interval_s)


@contextmanager
def serve_app(app: Any, *, timeout_s: float = 10.0) -> Iterator[str]:
    """Run ASGI ``app`` with uvicorn on 127.0.0.1 in a thread; yield ``http://127.0.0.1:PORT``."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="auto")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: server.started or not thread.is_alive(),
            timeout_s,
            0.02,
            what=f"uvicorn on port {port}",
        )
        if not server.started:
            raise AssertionError(f"uvicorn did not start on port {port} (see its log above)")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
