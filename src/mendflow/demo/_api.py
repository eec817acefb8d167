"""The demo's orders API: a small JSON server on 127.0.0.1 that misbehaves on cue.

    with OrdersApi(orders=500, faults=DEFAULT_FAULTS) as api:
        source = HttpSource(f"{api.url}/orders", records_path="data", ...)

``GET /orders?updated_since=<iso>&cursor=<token>&limit=<n>`` answers
``{"data": [...], "next_cursor": "<token>" | null}``: the orders updated after ``updated_since``,
oldest first, ``limit`` at a time (at most ``page_limit``). The cursor token is the offset into
that filtered list. ``GET /customers`` lists the customers to a client that sends
``Authorization: Bearer <token>`` and answers 401 to any other. Any other path answers 404.

``faults`` maps the number of a request (1-based, counted across every request the server gets)
to what goes wrong with it instead of a normal answer:

=============== ==============================================================================
fault           what the client sees
=============== ==============================================================================
``"503"``       that status (any three-digit code) with a JSON error body
``"429:<s>"``   429 with ``Retry-After: <s>``
``"timeout:<s>"`` nothing for ``<s>`` seconds, then the normal answer (too late for the client)
``"reset"``     the connection reset without an answer
=============== ==============================================================================
"""

from __future__ import annotations

import random
import threading
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType, TracebackType
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from mendflow.demo._server import Handler, Server
from mendflow.exceptions import ConfigError

__all__ = ["DEFAULT_FAULTS", "OrdersApi", "Served"]

#: A script that shows the healing: a 503, then a timeout, on the second page; a 500 on the third;
#: a reset connection and a rate limit on the fourth. No page fails more than twice in a row, so
#: ``Retry(attempts=5, base_s=0.05, cap_s=0.5)`` with ``timeout_s=0.5`` heals every one.
DEFAULT_FAULTS: Final[Mapping[int, str]] = MappingProxyType(
    {2: "503", 3: "timeout:1.5", 5: "500", 7: "reset", 8: "429:1"}
)

_START: Final = datetime(2026, 1, 1, tzinfo=UTC)
_CUSTOMERS: Final = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell")
_STATUSES: Final = ("placed", "paid", "shipped", "delivered", "cancelled")


@dataclass(frozen=True, slots=True)
class Served:
    """One request the server got: its number, path, the status sent (None: none) and fault."""

    number: int
    path: str
    status: int | None
    fault: str | None = None


class OrdersApi:
    """A deterministic orders API with scripted faults; a context manager that runs it."""

    def __init__(
        self,
        *,
        orders: int = 500,
        seed: int = 42,
        faults: Mapping[int, str] | None = None,
        page_limit: int = 100,
        token: str = "demo-token",  # noqa: S107 - the demo API's own made-up token
    ) -> None:
        self.faults = dict(faults or {})
        for fault in self.faults.values():
            _check_fault(fault)
        self.page_limit = page_limit
        self.token = token
        self.log: list[Served] = []
        self._rng = random.Random(seed)
        self._orders: list[dict[str, Any]] = []
        self._stamps: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self.add_orders(orders)

    def __enter__(self) -> OrdersApi:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running server."""
        if self._server is None:
            raise RuntimeError("the orders API is not running; call start() or use `with`.")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def records(self) -> list[dict[str, Any]]:
        """A copy of every order, oldest first."""
        with self._lock:
            return [dict(order) for order in self._orders]

    @property
    def faults_served(self) -> int:
        """How many requests got a fault instead of a normal answer."""
        with self._lock:
            return sum(1 for served in self.log if served.fault is not None)

    def outage(self, fault: str = "503", *, requests: int = 1_000) -> None:
        """Script the next ``requests`` requests to get ``fault``, until ``recover()``."""
        _check_fault(fault)
        with self._lock:
            after = len(self.log)
            self.faults.update({after + i: fault for i in range(1, requests + 1)})

    def recover(self) -> None:
        """Drop every fault scripted for a request not made yet."""
        with self._lock:
            made = len(self.log)
            self.faults = {n: f for n, f in self.faults.items() if n <= made}

    def start(self) -> None:
        """Listen on a free port of 127.0.0.1 and serve in a daemon thread."""
        if self._server is not None:
            return
        self._stopping.clear()
        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.api = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, cut short any scripted timeout, and close the socket."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def add_orders(self, n: int) -> None:
        """Append ``n`` new orders, updated after every existing one."""
        with self._lock:
            for _ in range(n):
                order = self._new_order()
                self._orders.append(order)
                self._stamps.append(order["updated_at"])

    def _new_order(self) -> dict[str, Any]:
        rng, number = self._rng, len(self._orders) + 1
        previous = datetime.fromisoformat(self._stamps[-1]) if self._stamps else _START
        updated = previous + timedelta(seconds=rng.randint(1, 300))
        return {
            "id": number,
            "updated_at": updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "customer": rng.choice(_CUSTOMERS),
            "amount": round(rng.uniform(5, 500), 2),
            "qty": rng.randint(1, 10),
            "status": rng.choice(_STATUSES),
        }

    def _admit(self, path: str) -> tuple[int, str | None]:
        """Count a request; its number and scripted fault."""
        with self._lock:
            number = len(self.log) + 1
            fault = self.faults.get(number)
            self.log.append(Served(number=number, path=path, status=None, fault=fault))
            return number, fault

    def _served(self, number: int, status: int | None) -> None:
        with self._lock:
            entry = self.log[number - 1]
            self.log[number - 1] = Served(entry.number, entry.path, status, entry.fault)

    def _answer(self, target: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        """Status and JSON body for a request target (path and query)."""
        url = urlsplit(target)
        if url.path == "/customers":
            if authorization != f"Bearer {self.token}":
                return 401, {"error": "missing or invalid bearer token"}
            return 200, {"data": [{"customer": name} for name in _CUSTOMERS]}
        if url.path != "/orders":
            return 404, {"error": f"no such path {url.path}; the API serves /orders."}
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        try:
            since = _since(query.get("updated_since"))
            offset = int(query.get("cursor") or 0)
            limit = min(int(query.get("limit") or self.page_limit), self.page_limit)
        except ValueError as exc:
            return 400, {"error": f"bad query: {exc}"}
        if offset < 0 or limit < 1:
            return 400, {"error": "cursor must be >= 0 and limit >= 1"}
        return 200, self._page(since, offset, limit)

    def _page(self, since: str, offset: int, limit: int) -> dict[str, Any]:
        with self._lock:
            matching = self._orders[bisect_right(self._stamps, since) :]
        page = matching[offset : offset + limit]
        more = offset + limit < len(matching)
        return {"data": page, "next_cursor": str(offset + limit) if more else None}


def _check_fault(fault: str) -> None:
    kind, _, value = fault.partition(":")
    valid = (
        (fault == "reset")
        or (kind == "429" and value.isdigit())
        or (kind == "timeout" and _is_seconds(value))
        or (fault.isdigit() and len(fault) == 3)
    )
    if not valid:
        raise ConfigError(
            f"unknown fault {fault!r}; use a status like '503', '429:<seconds>', "
            "'timeout:<seconds>' or 'reset'."
        )


def _is_seconds(value: str) -> bool:
    try:
        return float(value) >= 0
    except ValueError:
        return False


def _since(value: str | None) -> str:
    """``updated_since`` in the orders' own format, for comparing as text; "" for none."""
    if not value:
        return ""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
