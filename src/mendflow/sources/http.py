"""An HTTP JSON API, read page by page and incrementally.

    HttpSource(
        "https://api.example.com/orders",
        records_path="data",
        pagination=Pagination("cursor", cursor_param="cursor", cursor_path="next_cursor"),
        incremental_field="updated_at",
        incremental_param="updated_since",
    )

Each page is one batch. A *window* is one pass over the pages that follow the committed cursor;
the position says where the source stands after a page::

    {"cursor": <committed cursor or None>,
     "window": None | {"since": <cursor at window start>, "next": <next page>, "max": <max seen>}}

Mid-window, ``window.next`` is the next page's token (page number, offset, cursor or URL), so a run
that died between pages resumes at the next page with the same ``since``. On the last page the
window closes and the cursor becomes the largest ``incremental_field`` value of the window.
``incremental_param=<since>`` goes with every page of a window, so the API filters the pages the
same way; a followed ``link`` is requested as it is.
Records whose field is not greater than ``since`` are dropped (APIs that filter with ``>=`` send
the boundary record again); records without a value in the field are kept for the contract to
judge. The field must compare correctly as a JSON value: numbers, or ISO 8601 strings written in
one format.

Every request is retried with ``retry`` (within ``retry_budget``, a ``RetryBudget`` that every
source of one endpoint should share: retries then add at most about 20 % to the load of first
attempts, so a dead endpoint is not stormed), and passes the
endpoint's circuit breaker (``breaker``, a ``BreakerPolicy``; None for none), keyed by the
source's ``name``: after a burst of failures the requests fail fast with ``DependencyDown``
until the breaker lets a probe through. httpx errors and
HTTP statuses become mendflow errors where they enter (``HTTPX_ERRORS`` and ``status_error``, in
``mendflow.sources._http_errors``), raised ``from`` the original. ``Pagination`` (in
``mendflow.sources.pagination``) says how to ask for each page and how to tell the last.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Generator, Mapping
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc

from mendflow.batch import Batch, Position
from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.exceptions import ConfigError, SchemaMismatch
from mendflow.resilience.breaker import BreakerPolicy
from mendflow.resilience.budget import RetryBudget
from mendflow.resilience.registry import breaker_for
from mendflow.resilience.retry import Retry, retrying
from mendflow.sources._http_errors import HTTPX_ERRORS, HTTPX_UNUSED, status_error, translate
from mendflow.sources._window import Cursor, Window, greatest
from mendflow.sources.pagination import Pagination, Reply, dig

__all__ = ["HTTPX_ERRORS", "HTTPX_UNUSED", "HttpSource", "Pagination"]

class HttpSource:
    """Read the records of a JSON API, page by page, from where the last run committed."""

    def __init__(
        self,
        url: str,
        *,
        records_path: str | None = None,
        pagination: Pagination = Pagination(),  # noqa: B008 - frozen, so one shared default is safe
        incremental_field: str | None = None,
        incremental_param: str | None = None,
        initial_cursor: Cursor = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        retry: Retry = Retry(),  # noqa: B008 - frozen, so one shared default is safe
        breaker: BreakerPolicy | None = BreakerPolicy(),  # noqa: B008 - frozen as well
        retry_budget: RetryBudget | None = None,
        clock: Clock = SYSTEM_CLOCK,
        transport: httpx.BaseTransport | None = None,
        name: str = "",
    ) -> None:
        _check_url(url)
        if timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive, got {timeout_s}; fix it.")
        self.url = url
        self.records_path = records_path
        self.pagination = pagination
        self.incremental_field = incremental_field
        self.incremental_param = incremental_param
        self.initial_cursor = initial_cursor
        self.params = dict(params or {})
        self.headers = dict(headers or {})
        self.timeout_s = timeout_s
        self.retry = retry
        self.breaker = breaker
        self.retry_budget = retry_budget
        self.clock = clock
        self.transport = transport
        self.name = name or f"http:{url}"

    def read(self, position: Position) -> Generator[Batch, None, None]:
        """Yield one batch per page: the rest of an open window, or a new one from the cursor."""
        window = self._resume(position)
        client = httpx.Client(headers=self.headers, transport=self.transport, follow_redirects=True)
        with client:
            while True:
                batch, window = self._page(client, window)
                yield batch
                if window.token is None:
                    return

    def _resume(self, position: Position) -> Window:
        """Where to start: the open window of ``position``, else a new one from its cursor."""
        cursor = position.get("cursor", self.initial_cursor) if position else self.initial_cursor
        open_window = position.get("window") if position else None
        if not open_window:
            return Window(cursor=cursor, since=cursor, token=self.pagination.first())
        try:
            since, token, seen = open_window["since"], open_window["next"], open_window["max"]
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                f"{self.name}: position {position!r} was not written by an HTTP source; reset "
                "the pipeline's checkpoint or point it at the source that wrote it."
            ) from exc
        return Window(cursor=cursor, since=since, token=token, max=seen)

    def _page(self, client: httpx.Client, window: Window) -> tuple[Batch, Window]:
        """Read the page of ``window.token``; its batch, and the window after it (token None
        when that page was the last)."""
        reply = self._fetch(client, self._request(window))
        table = self._records(reply.body)
        fresh = self._fresh(table, window.since)
        token = self.pagination.after(window.token, rows=table.num_rows, reply=reply)
        if token is not None and token == window.token:
            raise SchemaMismatch(
                f"{self.name}: the API answered the page {token!r} with the same page as next; "
                "check the pagination settings (cursor_path, next_path).",
                dependency=self.name,
            )
        seen = greatest(window.max, self._largest(fresh))
        after = Window(cursor=window.cursor, since=window.since, token=token, max=seen)
        position = after.position(done=token is None)
        batch_id = _batch_id(self.url, window, position)
        return Batch(id=batch_id, data=fresh, position=position, source=self.name), after

    def _request(self, window: Window) -> httpx.URL:
        """The URL of the page of ``window.token``; a followed link is used as it is."""
        if self.pagination.kind == "link" and window.token is not None:
            return httpx.URL(str(window.token))
        params = dict(self.params)
        if self.incremental_param is not None and window.since is not None:
            params[self.incremental_param] = str(window.since)
        # Merged into the URL's own query: httpx's params= would replace it.
        return httpx.URL(self.url).copy_merge_params(params | self.pagination.params(window.token))

    def _fetch(self, client: httpx.Client, url: httpx.URL) -> Reply:
        """GET with retries, behind the endpoint's circuit breaker (shared by every run that
        uses the same state store); the answer of the attempt that succeeded."""
        reply: Reply | None = None
        breaker = None if self.breaker is None else breaker_for(self.name, self.breaker)
        budget = self.retry_budget
        retries = retrying(self.retry, dependency=self.name, clock=self.clock, budget=budget)
        for attempt in retries:
            with attempt:
                if breaker is None:
                    reply = self._get(client, url)
                else:
                    with breaker.guard():
                        reply = self._get(client, url)
        assert reply is not None  # retrying() returns only after an attempt succeeded
        return reply

    def _get(self, client: httpx.Client, url: httpx.URL) -> Reply:
        """One GET, with every failure translated to mendflow's taxonomy."""
        shown = str(url.copy_with(query=None))  # the query may hold an API key
        try:
            response = client.get(url, timeout=self.timeout_s)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise translate(exc, url=shown, dependency=self.name) from exc
        error = status_error(response, url=shown, dependency=self.name, now=self.clock.now())
        if error is not None:
            raise error
        try:
            body = response.json()
        except ValueError as exc:
            raise SchemaMismatch(
                f"GET {shown} answered {response.status_code} with a body that is not JSON "
                f"({response.text[:80]!r}); check the URL points at the JSON API.",
                dependency=self.name,
                status=response.status_code,
            ) from exc
        link = response.links.get("next", {}).get("url")
        return Reply(body=body, url=str(response.url), link_next=link)

    def _records(self, body: Any) -> pa.Table:
        """The records of a page as a table (columns from every record, not just the first)."""
        records = body if self.records_path is None else dig(body, self.records_path)
        if not isinstance(records, list):
            raise SchemaMismatch(_no_records(body, self.records_path), dependency=self.name)
        if not records:
            return pa.table({})
        try:
            array = pa.array(records)
        except pa.ArrowException as exc:
            raise SchemaMismatch(
                f"{self.name}: the records do not form a table ({exc}); check the API's "
                "records have one type per field.",
                dependency=self.name,
            ) from exc
        if not pa.types.is_struct(array.type):
            raise SchemaMismatch(
                f"{self.name}: the records are {array.type}, not JSON objects; point "
                "records_path at the list of objects.",
                dependency=self.name,
            )
        return pa.Table.from_struct_array(array)

    def _fresh(self, table: pa.Table, since: Cursor) -> pa.Table:
        """Drop the records whose incremental field is not after ``since`` (vectorized)."""
        field = self.incremental_field
        if field is None or table.num_rows == 0:
            return table
        if field not in table.column_names:
            raise SchemaMismatch(
                f"{self.name}: records have no field {field!r} (fields: "
                f"{', '.join(table.column_names)}); fix incremental_field.",
                dependency=self.name,
            )
        column = table[field]
        if since is None or pa.types.is_null(column.type):
            return table
        try:
            keep = pc.fill_null(pc.greater(column, since), fill_value=True)
        except pa.ArrowException as exc:
            raise SchemaMismatch(
                f"{self.name}: {field!r} values ({column.type}) cannot be compared with the "
                f"cursor {since!r}; reset the cursor or fix incremental_field.",
                dependency=self.name,
            ) from exc
        return table.filter(keep)

    def _largest(self, table: pa.Table) -> Cursor:
        field = self.incremental_field
        if field is None or table.num_rows == 0 or field not in table.column_names:
            return None
        try:
            largest: Cursor = pc.max(table[field]).as_py()
        except pa.ArrowException as exc:
            raise SchemaMismatch(
                f"{self.name}: {field!r} values ({table[field].type}) have no maximum; point "
                "incremental_field at a number or timestamp field.",
                dependency=self.name,
            ) from exc
        return largest


def _batch_id(url: str, window: Window, after: Position) -> str:
    """An id from positions alone: the page asked for (window start and token) and where the
    source stands after it, so a page re-read as it was gets the id it had, while the first page
    after new records arrive (same window start and token, more rows) gets a new one."""
    key = json.dumps([url, window.since, window.token, after], sort_keys=True)
    return "http:" + hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:20]


def _check_url(url: str) -> None:
    try:
        scheme = httpx.URL(url).scheme
    except httpx.InvalidURL as exc:
        raise ConfigError(f"invalid URL {url!r}: {exc}; fix the source's url.") from exc
    if scheme not in ("http", "https"):
        raise ConfigError(f"URL {url!r} is not http(s); give the API's full http:// URL.")


def _no_records(body: Any, path: str | None) -> str:
    """Say where the records were expected and what was found there instead."""
    if path is None:
        return (
            f"the response is a JSON {type(body).__name__}, not a list of records; set "
            "records_path to the key that holds them."
        )
    value: Any = body
    reached: list[str] = []
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            break
        value = value[key]
        reached.append(key)
    where = ".".join(reached) or "the top level"
    keys = sorted(value) if isinstance(value, dict) else type(value).__name__
    return (
        f"no list of records at records_path {path!r} (found at {where}: {keys}); set "
        "records_path to the dotted path of the list."
    )

