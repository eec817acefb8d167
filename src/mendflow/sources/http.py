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

Every request is retried with ``retry`` and passes the endpoint's circuit breaker (``breaker``, a
``BreakerPolicy``; None for none), keyed by the source's ``name``: after a burst of failures the
requests fail fast with ``DependencyDown`` until the breaker lets a probe through. httpx errors and
HTTP statuses become mendflow errors where they enter (``HTTPX_ERRORS`` and ``_status_error``),
raised ``from`` the original.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
from collections.abc import Generator, Mapping
from dataclasses import KW_ONLY, dataclass
from types import MappingProxyType
from typing import Any, Final

import httpx
import pyarrow as pa
import pyarrow.compute as pc

from mendflow.batch import Batch, Position
from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.exceptions import (
    ConfigError,
    MendflowError,
    PermanentError,
    RateLimited,
    SchemaMismatch,
    SourceRejected,
    SourceUnavailable,
    TransientError,
)
from mendflow.resilience.breaker import BreakerPolicy
from mendflow.resilience.registry import breaker_for
from mendflow.resilience.retry import Retry, retrying

__all__ = ["HTTPX_ERRORS", "HTTPX_UNUSED", "HttpSource", "Pagination"]

#: A page token: a page number, an offset, an opaque cursor or a URL; None for "the first page"
#: of the cursor and link kinds.
Token = str | int | None
Cursor = str | int | float | None

KINDS: Final = ("none", "page", "offset", "cursor", "link")

#: Which mendflow error each httpx error becomes. Every httpx error class is listed (a test fails
#: when httpx adds one); an error is looked up by its class, then by its bases.
HTTPX_ERRORS: Final[Mapping[type[Exception], type[MendflowError]]] = MappingProxyType(
    {
        httpx.HTTPError: SourceUnavailable,
        httpx.RequestError: SourceUnavailable,
        httpx.TransportError: SourceUnavailable,
        httpx.TimeoutException: SourceUnavailable,
        httpx.ConnectTimeout: SourceUnavailable,
        httpx.ReadTimeout: SourceUnavailable,
        httpx.WriteTimeout: SourceUnavailable,
        httpx.PoolTimeout: SourceUnavailable,
        httpx.NetworkError: SourceUnavailable,
        httpx.ConnectError: SourceUnavailable,
        httpx.ReadError: SourceUnavailable,
        httpx.WriteError: SourceUnavailable,
        httpx.CloseError: SourceUnavailable,
        httpx.ProxyError: SourceUnavailable,
        httpx.ProtocolError: SourceUnavailable,
        httpx.RemoteProtocolError: SourceUnavailable,
        httpx.LocalProtocolError: ConfigError,
        httpx.UnsupportedProtocol: ConfigError,
        httpx.InvalidURL: ConfigError,
        httpx.DecodingError: SchemaMismatch,
        httpx.TooManyRedirects: SourceRejected,
        httpx.HTTPStatusError: SourceRejected,
    }
)

#: httpx errors raised only by APIs this source does not use (cookies jar lookups, streaming).
HTTPX_UNUSED: Final = (
    httpx.CookieConflict,
    httpx.StreamError,
    httpx.StreamConsumed,
    httpx.StreamClosed,
    httpx.ResponseNotRead,
    httpx.RequestNotRead,
)

_ADVICE: Final[Mapping[type[MendflowError], str]] = {
    SourceUnavailable: "check the service is up and reachable; mendflow retries with backoff",
    ConfigError: "fix the source's URL or headers",
    SourceRejected: "check the URL; retrying will not help",
    SchemaMismatch: "check what the API returns; retrying will not help",
}
_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class Pagination:
    """How to ask for the next page, and how to tell the last one.

    ======== ================================================ =====================================
    kind     sends                                            last page
    ======== ================================================ =====================================
    none     nothing                                          the first
    page     ``page_param`` (from ``start_page``), and        an empty page, or fewer records than
             ``size_param=page_size`` when both are set       ``page_size`` when it is set
    offset   ``offset_param`` and ``limit_param=limit``       fewer records than ``limit``
    cursor   ``cursor_param`` = the token at ``cursor_path``  no token (null, missing or "")
    link     follows the URL at ``next_path`` in the body,    no next URL
             else the ``Link: <...>; rel="next"`` header
    ======== ================================================ =====================================
    """

    kind: str = "none"
    _: KW_ONLY
    page_param: str = "page"
    start_page: int = 1
    size_param: str | None = None
    page_size: int | None = None
    offset_param: str = "offset"
    limit_param: str = "limit"
    limit: int = 100
    cursor_param: str = "cursor"
    cursor_path: str = "next_cursor"
    next_path: str = "next"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(
                f"unknown pagination kind {self.kind!r}; use one of: {', '.join(KINDS)}."
            )
        if self.limit < 1 or (self.page_size is not None and self.page_size < 1):
            raise ConfigError("pagination limit and page_size must be at least 1; fix them.")

    def first(self) -> Token:
        """The token of a window's first page."""
        return {"page": self.start_page, "offset": 0}.get(self.kind)

    def params(self, token: Token) -> dict[str, str]:
        """Query parameters that ask for the page of ``token``."""
        if self.kind == "page":
            sized = self.size_param is not None and self.page_size is not None
            size = {str(self.size_param): str(self.page_size)} if sized else {}
            return {self.page_param: str(token), **size}
        if self.kind == "offset":
            return {self.offset_param: str(token), self.limit_param: str(self.limit)}
        if self.kind == "cursor" and token is not None:
            return {self.cursor_param: str(token)}
        return {}

    def after(self, token: Token, *, rows: int, reply: _Reply) -> Token:
        """The token of the page after ``token``, or None when that page was the last."""
        if self.kind in ("page", "offset"):
            return self._counted(token, rows)
        if self.kind == "cursor":
            found = _dig(reply.body, self.cursor_path)
            return None if found in (_MISSING, None, "") else str(found)
        if self.kind == "link":
            found = _dig(reply.body, self.next_path)
            link = found if isinstance(found, str) and found else reply.link_next
            return _join(reply.url, link) if link else None
        return None

    def _counted(self, token: Token, rows: int) -> Token:
        if rows == 0 or not isinstance(token, int):
            return None
        if self.kind == "offset":
            return None if rows < self.limit else token + rows
        return None if self.page_size is not None and rows < self.page_size else token + 1


@dataclass(frozen=True, slots=True)
class _Reply:
    """A decoded answer: its JSON body, its URL, and the URL of its ``Link: rel="next"``."""

    body: Any
    url: str
    link_next: str | None


@dataclass(frozen=True, slots=True)
class _Window:
    """Where a read stands: the committed cursor, the window's start, its next page, its max."""

    cursor: Cursor
    since: Cursor
    token: Token
    max: Cursor = None

    def position(self, *, done: bool) -> Position:
        """The JSON-ready position: mid-window, or with the window closed when ``done``."""
        if done:
            return {"cursor": _greatest(self.max, self.cursor), "window": None}
        window = {"since": self.since, "next": self.token, "max": self.max}
        return {"cursor": self.cursor, "window": window}


class HttpSource:
    """Read the records of a JSON API, page by page, from where the last run committed."""

    def __init__(
        self,
        url: str,
        *,
        records_path: str | None = None,
        pagination: Pagination = Pagination(),
        incremental_field: str | None = None,
        incremental_param: str | None = None,
        initial_cursor: Cursor = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        retry: Retry = Retry(),  # noqa: B008 - frozen, so one shared default is safe
        breaker: BreakerPolicy | None = BreakerPolicy(),  # noqa: B008 - frozen as well
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

    def _resume(self, position: Position) -> _Window:
        """Where to start: the open window of ``position``, else a new one from its cursor."""
        cursor = position.get("cursor", self.initial_cursor) if position else self.initial_cursor
        open_window = position.get("window") if position else None
        if not open_window:
            return _Window(cursor=cursor, since=cursor, token=self.pagination.first())
        try:
            since, token, seen = open_window["since"], open_window["next"], open_window["max"]
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                f"{self.name}: position {position!r} was not written by an HTTP source; reset "
                "the pipeline's checkpoint or point it at the source that wrote it."
            ) from exc
        return _Window(cursor=cursor, since=since, token=token, max=seen)

    def _page(self, client: httpx.Client, window: _Window) -> tuple[Batch, _Window]:
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
        seen = _greatest(window.max, self._largest(fresh))
        after = _Window(cursor=window.cursor, since=window.since, token=token, max=seen)
        position = after.position(done=token is None)
        batch_id = _batch_id(self.url, window, position)
        return Batch(id=batch_id, data=fresh, position=position, source=self.name), after

    def _request(self, window: _Window) -> httpx.URL:
        """The URL of the page of ``window.token``; a followed link is used as it is."""
        if self.pagination.kind == "link" and window.token is not None:
            return httpx.URL(str(window.token))
        params = dict(self.params)
        if self.incremental_param is not None and window.since is not None:
            params[self.incremental_param] = str(window.since)
        # Merged into the URL's own query: httpx's params= would replace it.
        return httpx.URL(self.url).copy_merge_params(params | self.pagination.params(window.token))

    def _fetch(self, client: httpx.Client, url: httpx.URL) -> _Reply:
        """GET with retries, behind the endpoint's circuit breaker (shared by every run that
        uses the same state store); the answer of the attempt that succeeded."""
        reply: _Reply | None = None
        breaker = None if self.breaker is None else breaker_for(self.name, self.breaker)
        for attempt in retrying(self.retry, dependency=self.name, clock=self.clock):
            with attempt:
                if breaker is None:
                    reply = self._get(client, url)
                else:
                    with breaker.guard():
                        reply = self._get(client, url)
        assert reply is not None  # retrying() returns only after an attempt succeeded
        return reply

    def _get(self, client: httpx.Client, url: httpx.URL) -> _Reply:
        """One GET, with every failure translated to mendflow's taxonomy."""
        shown = str(url.copy_with(query=None))  # the query may hold an API key
        try:
            response = client.get(url, timeout=self.timeout_s)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _translate(exc, url=shown, dependency=self.name) from exc
        error = _status_error(response, url=shown, dependency=self.name, now=self.clock.now())
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
        return _Reply(body=body, url=str(response.url), link_next=link)

    def _records(self, body: Any) -> pa.Table:
        """The records of a page as a table (columns from every record, not just the first)."""
        records = body if self.records_path is None else _dig(body, self.records_path)
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


def _batch_id(url: str, window: _Window, after: Position) -> str:
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


def _join(base: str, link: str) -> str:
    """The absolute URL of a next link, which may be relative to the page's URL."""
    try:
        return str(httpx.URL(base).join(link))
    except httpx.InvalidURL as exc:
        raise SchemaMismatch(
            f"the next link {link!r} of {base} is not a URL ({exc}); check next_path."
        ) from exc


def _translate(exc: Exception, *, url: str, dependency: str) -> MendflowError:
    """The mendflow error for an httpx error, by its class (``HTTPX_ERRORS``)."""
    kind = next(
        (HTTPX_ERRORS[c] for c in type(exc).__mro__ if c in HTTPX_ERRORS), SourceUnavailable
    )
    detail = str(exc) or "no detail"
    message = f"GET {url} failed ({type(exc).__name__}: {detail}); {_ADVICE[kind]}."
    if issubclass(kind, TransientError | PermanentError):
        return kind(message, dependency=dependency)
    return kind(message)


def _status_error(
    response: httpx.Response, *, url: str, dependency: str, now: float
) -> MendflowError | None:
    """The mendflow error for a status that is not 2xx; None for success."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    said = f"GET {url} answered {status}"
    retry_after = response.headers.get("Retry-After")
    if status == 429 or (status == 503 and retry_after is not None):
        return RateLimited(
            f"{said}: slow down; mendflow waits as told and retries. If it persists, lower "
            "the request rate or ask for a higher quota.",
            dependency=dependency,
            status=status,
            retry_after_s=_retry_after_s(retry_after, now=now),
        )
    if status >= 500 or status == 408:
        return SourceUnavailable(
            f"{said}; check the service is up. mendflow retries with backoff.",
            dependency=dependency,
            status=status,
        )
    return SourceRejected(
        f"{said} ({response.text[:120]!r}); check the URL, parameters and credentials. "
        "Retrying will not help.",
        dependency=dependency,
        status=status,
    )


def _retry_after_s(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date; None if bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now) if when.tzinfo else None


def _dig(value: Any, path: str) -> Any:
    """The value at a dotted ``path`` inside JSON objects, or ``_MISSING``."""
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


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


def _greatest(a: Cursor, b: Cursor) -> Cursor:
    """The larger of two cursor values, ignoring None."""
    if a is None or b is None:
        return b if a is None else a
    try:
        return max(a, b)
    except TypeError as exc:  # a str and a number
        raise SchemaMismatch(
            f"cursor values {a!r} and {b!r} cannot be compared; the incremental field must "
            "hold one type. Reset the cursor or fix incremental_field.",
        ) from exc
