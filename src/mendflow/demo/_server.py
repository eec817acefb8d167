"""The HTTP side of the demo's orders API: a threading server and its request handler.

The handler only adapts HTTP to ``OrdersApi``: it counts the request, misbehaves if the fault
script says so (a status, a late answer or a reset connection), else sends the API's answer.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from mendflow.demo._api import OrdersApi

__all__ = ["Handler", "Server"]


class Server(ThreadingHTTPServer):
    """The HTTP server, holding the API it serves and keeping errors to itself."""

    api: OrdersApi
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: a client that gave up on a scripted timeout is part of the demo."""


class Handler(BaseHTTPRequestHandler):
    """Serves one connection: a fault if the script says so, else the orders."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        """Answer a GET, or misbehave as scripted."""
        api = cast(Server, self.server).api
        number, fault = api._admit(self.path)
        if fault == "reset":
            self._reset()
            return
        if fault is not None and fault.startswith("timeout:"):
            api._stopping.wait(float(fault.partition(":")[2]))
        answer = api._answer(self.path, self.headers.get("Authorization"))
        status, body, headers = _faulty(fault) or (*answer, {})
        api._served(number, status)
        self._send(status, body, headers)

    def _send(self, status: int, body: dict[str, Any], headers: Mapping[str, str]) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client left (a scripted timeout)

    def _reset(self) -> None:
        """Drop the connection with a TCP reset instead of an answer."""
        linger = struct.pack("ii", 1, 0)
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        self.request.close()
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Print nothing; the demo reports from ``OrdersApi.log``."""


def _faulty(fault: str | None) -> tuple[int, dict[str, Any], dict[str, str]] | None:
    """The answer a status fault gives instead of the orders; None for no such fault."""
    if fault is None or fault.startswith("timeout:"):
        return None
    if fault.startswith("429:"):
        seconds = fault.partition(":")[2]
        return 429, {"error": "rate limited"}, {"Retry-After": seconds}
    return int(fault), {"error": f"scripted failure {fault}"}, {}
