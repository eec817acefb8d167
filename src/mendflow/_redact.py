"""Secrets kept out of what mendflow prints, logs and stores.

``redact_url`` masks the password of a database URL (``postgresql://u:***@h/db``), and of a libpq
key/value string (``password=***``); ``redact`` masks every known secret in a message, such as a
driver's error text that quotes its connection string.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["MASK", "redact", "redact_url"]

MASK = "***"
_KEYVALUE = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_AUTHORITY = re.compile(r"([a-z][a-z0-9+.-]*://[^:/@?#\s]*:)(.*)@", re.IGNORECASE | re.DOTALL)
_QUERY = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@\s]*)(@)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with its password (in the userinfo, a ``password=`` parameter or a libpq
    ``password=`` pair) replaced by ``***``; the rest of it exactly as it was."""
    if "://" not in url:
        return _KEYVALUE.sub(lambda m: m.group(1) + MASK, url)
    found = _AUTHORITY.match(url)
    if found:  # the password runs to the last "@": a raw one may hold "@", "#", "/" or "?"
        url = found.group(1) + MASK + url[found.end(2):]
    return _QUERY.sub(lambda m: m.group(1) + MASK, url)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``secrets`` (non-empty ones) and any URL or libpq password masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    text = _USERINFO.sub(lambda m: m.group(1) + MASK + m.group(3), text)
    return _KEYVALUE.sub(lambda m: m.group(1) + MASK, text)
