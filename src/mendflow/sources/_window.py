"""Where an incremental HTTP read stands: the committed cursor and the window being read.

A *window* is one pass over the pages that follow the committed cursor. Its position, as the sink
commits it with each page::

    {"cursor": <committed cursor or None>,
     "window": None | {"since": <cursor at window start>, "next": <next page>, "max": <max seen>}}
"""

from __future__ import annotations

from dataclasses import dataclass

from mendflow.batch import Position
from mendflow.exceptions import SchemaMismatch
from mendflow.sources.pagination import Token

__all__ = ["Cursor", "Window", "greatest"]

#: A value of the incremental field, as JSON gives it.
Cursor = str | int | float | None


@dataclass(frozen=True, slots=True)
class Window:
    """Where a read stands: the committed cursor, the window's start, its next page, its max."""

    cursor: Cursor
    since: Cursor
    token: Token
    max: Cursor = None

    def position(self, *, done: bool) -> Position:
        """The JSON-ready position: mid-window, or with the window closed when ``done``."""
        if done:
            return {"cursor": greatest(self.max, self.cursor), "window": None}
        window = {"since": self.since, "next": self.token, "max": self.max}
        return {"cursor": self.cursor, "window": window}


def greatest(a: Cursor, b: Cursor) -> Cursor:
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
