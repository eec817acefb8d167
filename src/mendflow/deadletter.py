"""The dead-letter store: records set aside, what failed, and their way back into the table.

Every record a pipeline reads ends in its destination or here, exactly once. A dead letter keeps
the original record byte-exact, every failed check, the stage that set it aside, and how often a
replay tried it. The store lives in the destination database, so a replayed record leaves it in
the same transaction that loads it::

    store = store_for(pipeline.destination)
    store.list(Filter(pipeline="orders", check="type", since=time.time() - 3600))
    result = replay(pipeline)           # after fixing the contract or a transform
    store.purge(Filter(pipeline="orders", until=time.time() - 30 * 86400))
"""

from __future__ import annotations

import base64
import builtins
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Protocol

from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.exceptions import ConfigError

if TYPE_CHECKING:
    from mendflow.pipeline import Pipeline
    from mendflow.typing import Hook

__all__ = [
    "DeadLetter",
    "DeadLetterStore",
    "Filter",
    "ReplayResult",
    "replay",
    "store_for",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """One record set aside: where from, why, the record itself, and its replay history.

    ``checks`` holds every failed check as ``{"check", "column", "message"}``; ``record`` the
    original bytes, written as ``format`` (``json``, ``csv`` or ``bytes``); ``first_seen`` and
    ``last_seen`` are epoch seconds (the last replay that failed it again moves ``last_seen``).
    """

    id: int
    pipeline: str
    run_id: str
    batch_id: str
    row_index: int
    stage: str
    reason: str
    checks: tuple[dict[str, Any], ...]
    record: bytes
    format: str
    attempts: int
    first_seen: float
    last_seen: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: the record as text when it is UTF-8, else base64 (see ``encoding``)."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields["checks"] = list(self.checks)
        try:
            fields["record"], fields["encoding"] = self.record.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            fields["record"] = base64.b64encode(self.record).decode("ascii")
            fields["encoding"] = "base64"
        for name in ("first_seen", "last_seen"):
            fields[name] = datetime.fromtimestamp(getattr(self, name), UTC).isoformat()
        return fields


def parse_checks(text: str | None) -> tuple[dict[str, Any], ...]:
    """The failed checks stored as a JSON list (none when absent or not a list)."""
    if not text:
        return ()
    try:
        value = json.loads(text)
    except ValueError:
        return ({"check": "unknown", "column": None, "message": text},)
    return tuple(v for v in value if isinstance(v, dict)) if isinstance(value, list) else ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Filter:
    """Which dead letters: every field set narrows the selection (all of them must match).

    ``check`` matches a failed check's name; ``since``/``until`` bound ``last_seen`` (epoch
    seconds, ``until`` exclusive); ``limit`` keeps the oldest ``limit`` by id.
    """

    pipeline: str | None = None
    check: str | None = None
    stage: str | None = None
    since: float | None = None
    until: float | None = None
    ids: tuple[int, ...] = ()
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be at least 1, not {self.limit}.")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ConfigError("`since` must be before `until`; swap them or drop one.")
        object.__setattr__(self, "ids", tuple(self.ids))

    @property
    def narrows(self) -> bool:
        """True if anything but the pipeline narrows the selection."""
        return any(
            v not in (None, ()) for v in (self.check, self.stage, self.since, self.until,
                                          self.ids, self.limit)
        )


class DeadLetterStore(Protocol):
    """Where a destination keeps its dead letters."""

    def list(self, where: Filter | None = None) -> builtins.list[DeadLetter]:
        """The dead letters selected (None: all), oldest id first."""
        ...

    def get(self, id: int) -> DeadLetter | None:
        """One dead letter, or None if there is none with this id."""
        ...

    def purge(self, where: Filter) -> int:
        """Delete the dead letters selected; return how many."""
        ...

    def export(self, where: Filter, out: IO[str]) -> int:
        """Write the dead letters selected to ``out`` as JSON lines; return how many."""
        ...

    def pending(
        self, where: Filter, *, max_attempts: int | None, size: int
    ) -> Iterator[builtins.list[DeadLetter]]:
        """The dead letters selected with fewer than ``max_attempts`` attempts (None: any), in
        chunks of at most ``size``, oldest id first; a chunk is read after the last is settled."""
        ...

    def count(self, where: Filter, *, min_attempts: int) -> int:
        """How many selected dead letters have at least ``min_attempts`` attempts."""
        ...

    def tried(self, ids: Sequence[int]) -> None:
        """Count one more attempt for ``ids``, whose replay was rolled back."""
        ...


def store_for(destination: object) -> DeadLetterStore:
    """The dead-letter store of ``destination`` (a sink with a ``dead_letters()`` method)."""
    dead_letters = getattr(destination, "dead_letters", None)
    if not callable(dead_letters):
        name = getattr(destination, "name", type(destination).__name__)
        raise ConfigError(
            f"destination {name} keeps no dead-letter store; the DuckDB, PostgreSQL and SQLite "
            "destinations keep one beside the table."
        )
    store: DeadLetterStore = dead_letters()
    return store


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayResult:
    """What a replay did: ``loaded`` left the store for the table, ``failed`` stayed with their
    attempts raised, ``skipped`` cannot be replayed as stored (CSV lines, raw bytes: export,
    fix and drop the file again), ``poison`` reached ``max_replays`` and were left alone."""

    loaded: int = 0
    failed: int = 0
    skipped: int = 0
    poison: int = 0
    ids_loaded: tuple[int, ...] = field(default=(), repr=False)
    #: Why chunks were rolled back (a blocking check failed); their records count as failed.
    blocked: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counts."""
        return {"loaded": self.loaded, "failed": self.failed, "skipped": self.skipped,
                "poison": self.poison, "blocked": list(self.blocked)}


def replay(
    pipeline: Pipeline,
    *,
    where: Filter | None = None,
    force: bool = False,
    hooks: Iterable[Hook] = (),
    clock: Clock = SYSTEM_CLOCK,
    chunk: int = 100_000,
) -> ReplayResult:
    """Run ``pipeline``'s dead letters through its current contract and transforms again.

    Each chunk is one load: the records that pass go into the table and leave the store in
    that transaction; the ones that fail again stay, record unchanged, with ``attempts`` raised
    and the new reasons. Records tried ``pipeline.max_replays`` times are left alone (poison)
    unless ``force``. The checkpoint is never moved.
    """
    from mendflow._replay import run_replay

    return run_replay(
        pipeline, where=where or Filter(), force=force, hooks=hooks, clock=clock, chunk=chunk
    )
