"""httpx errors and HTTP statuses translated to mendflow's taxonomy, where they enter.

``translate`` maps an httpx error by its class (``HTTPX_ERRORS``); ``status_error`` maps a status
that is not 2xx: 429 (or 503 with ``Retry-After``) to ``RateLimited``, 5xx and 408 to
``SourceUnavailable``, any other to ``SourceRejected``. Messages end with what to do.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import httpx

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

__all__ = ["HTTPX_ERRORS", "HTTPX_UNUSED", "retry_after_s", "status_error", "translate"]

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


def translate(exc: Exception, *, url: str, dependency: str) -> MendflowError:
    """The mendflow error for an httpx error, by its class (``HTTPX_ERRORS``)."""
    kind = next(
        (HTTPX_ERRORS[c] for c in type(exc).__mro__ if c in HTTPX_ERRORS), SourceUnavailable
    )
    detail = str(exc) or "no detail"
    message = f"GET {url} failed ({type(exc).__name__}: {detail}); {_ADVICE[kind]}."
    if issubclass(kind, TransientError | PermanentError):
        return kind(message, dependency=dependency)
    return kind(message)


def status_error(
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
            retry_after_s=retry_after_s(retry_after, now=now),
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


def retry_after_s(value: str | None, *, now: float) -> float | None:
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
