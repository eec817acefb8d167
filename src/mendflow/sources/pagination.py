"""How an HTTP source asks for the next page of a JSON API, and tells the last one.

    Pagination("cursor", cursor_param="cursor", cursor_path="next_cursor")

A page is named by a *token* (a page number, an offset, an opaque cursor or a URL); ``first()``
gives the token of a window's first page, ``params(token)`` the query that asks for it, and
``after(token, ...)`` the token of the page after it, read from the decoded answer (a ``Reply``).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any, Final

import httpx

from mendflow.exceptions import ConfigError, SchemaMismatch

__all__ = ["KINDS", "Pagination", "Reply", "Token"]

#: A page token: a page number, an offset, an opaque cursor or a URL; None for "the first page"
#: of the cursor and link kinds.
Token = str | int | None

KINDS: Final = ("none", "page", "offset", "cursor", "link")

#: What ``dig`` returns when the path leads nowhere (a JSON null is None, so None cannot say it).
MISSING: Final = object()


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

    def after(self, token: Token, *, rows: int, reply: Reply) -> Token:
        """The token of the page after ``token``, or None when that page was the last."""
        if self.kind in ("page", "offset"):
            return self._counted(token, rows)
        if self.kind == "cursor":
            found = dig(reply.body, self.cursor_path)
            return None if found in (MISSING, None, "") else str(found)
        if self.kind == "link":
            found = dig(reply.body, self.next_path)
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
class Reply:
    """A decoded answer: its JSON body, its URL, and the URL of its ``Link: rel="next"``."""

    body: Any
    url: str
    link_next: str | None


def dig(value: Any, path: str) -> Any:
    """The value at a dotted ``path`` inside JSON objects, or ``MISSING``."""
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return MISSING
        value = value[key]
    return value


def _join(base: str, link: str) -> str:
    """The absolute URL of a next link, which may be relative to the page's URL."""
    try:
        return str(httpx.URL(base).join(link))
    except httpx.InvalidURL as exc:
        raise SchemaMismatch(
            f"the next link {link!r} of {base} is not a URL ({exc}); check next_path."
        ) from exc
