"""Events the runner emits, and the hooks that subscribe to them.

The core never logs, counts or stores anything itself: it builds a frozen event and hands it to
every registered hook. The state store, the CLI's progress line and the chaos injectors are hooks.

    hooks = Hooks([store.record, print])
    hooks.emit(RunStarted(run_id="...", pipeline="orders", at=now))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

Hook = Callable[["Event"], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event: which run of which pipeline, and when (epoch seconds)."""

    run_id: str
    pipeline: str
    at: float

    @property
    def kind(self) -> str:
        """Dotted name of the event, e.g. ``batch.loaded``."""
        return _KINDS[type(self)]

    def payload(self) -> dict[str, Any]:
        """The event's own fields, JSON-ready, without run_id, pipeline and at."""
        skip = {"run_id", "pipeline", "at"}
        return {k: getattr(self, k) for k in self.__slots__ if k not in skip}


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(Event):
    """A run began; ``checkpoint`` is the committed position it resumes from."""

    write_mode: str
    checkpoint: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchRead(Event):
    """The source produced a batch."""

    batch_id: str
    rows: int
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchTransformed(Event):
    """Coercion and transforms ran; ``rows`` go on to load, ``dead_letters`` were set aside."""

    batch_id: str
    rows: int
    dead_letters: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchStaged(Event):
    """The batch is written inside the open load transaction, just before COMMIT."""

    batch_id: str
    rows: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchLoaded(Event):
    """The batch, its dead letters and the new checkpoint were committed together."""

    batch_id: str
    rows: int
    dead_letters: int
    checkpoint: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchSkipped(Event):
    """The batch was committed by an earlier attempt; it was not loaded again."""

    batch_id: str
    rows: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryScheduled(Event):
    """A call failed with a retryable error and will be tried again after ``delay_s``."""

    dependency: str
    attempt: int
    delay_s: float
    error: str
    error_type: str
    status: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Recovered(Event):
    """A call that had failed succeeded on a later attempt."""

    dependency: str
    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerChanged(Event):
    """A circuit breaker moved from ``previous`` to ``state`` (closed, open or half_open)."""

    dependency: str
    previous: str
    state: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TierSwitched(Event):
    """A fallback source moved from tier ``previous`` to tier ``tier``.

    ``dependency`` is the tier that failed (or, on the way back, the primary that recovered);
    ``error_type`` names the error that made it switch ("" when returning to the primary).
    """

    dependency: str
    previous: str
    tier: str
    reason: str
    error_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchQuarantined(Event):
    """A batch that could not load was set aside whole in the dead-letter store."""

    batch_id: str
    rows: int
    reason: str
    error_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(Event):
    """The run read everything there was and committed it."""

    rows_read: int
    rows_loaded: int
    dead_letters: int
    batches: int
    skipped: int
    duration_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFailed(Event):
    """The run stopped on an error; what was committed before stays committed."""

    error: str
    error_type: str
    retryable: bool
    duration_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckRan(Event):
    """A check judged a batch inside its load transaction (``passed`` False: it failed)."""

    batch_id: str
    check: str
    blocking: bool
    passed: bool
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemaChanged(Event):
    """The destination table's schema changed with a batch (new version ``version``).

    ``changes`` lists what changed: ``{"change": "added"|"widened"|"removed"|"discarded"|
    "narrowed", "column", "from", "to"}``.
    """

    batch_id: str
    table: str
    version: int
    changes: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordsReplayed(Event):
    """Dead letters were replayed: ``loaded`` left the store, ``failed`` stayed (attempts+1)."""

    loaded: int
    failed: int
    skipped: int


_KINDS: dict[type[Event], str] = {
    RunStarted: "run.started",
    BatchRead: "batch.read",
    BatchTransformed: "batch.transformed",
    BatchStaged: "batch.staged",
    BatchLoaded: "batch.loaded",
    BatchSkipped: "batch.skipped",
    RetryScheduled: "retry.scheduled",
    Recovered: "retry.recovered",
    BreakerChanged: "breaker.changed",
    TierSwitched: "tier.switched",
    BatchQuarantined: "batch.quarantined",
    RunFinished: "run.finished",
    RunFailed: "run.failed",
    CheckRan: "check.ran",
    SchemaChanged: "schema.changed",
    RecordsReplayed: "dlq.replayed",
}


class Hooks:
    """An ordered list of subscribers; ``emit`` calls each with the event."""

    __slots__ = ("_hooks",)

    def __init__(self, hooks: Iterable[Hook] = ()) -> None:
        self._hooks: list[Hook] = list(hooks)

    def add(self, hook: Hook) -> None:
        """Subscribe ``hook`` to every event emitted from now on."""
        self._hooks.append(hook)

    def emit(self, event: Event) -> None:
        """Hand ``event`` to every hook, in the order they were added."""
        for hook in self._hooks:
            hook(event)


@dataclass(frozen=True, slots=True)
class RunContext:
    """The run a piece of code is working for, so deep code can emit without holding hooks."""

    run_id: str
    pipeline: str
    hooks: Hooks
    now: Callable[[], float]


_current: ContextVar[RunContext | None] = ContextVar("mendflow_run", default=None)


def current_run() -> RunContext | None:
    """The run this code works for, or None outside a run."""
    return _current.get()


def bind_run(context: RunContext | None) -> Token[RunContext | None]:
    """Make ``context`` the current run; undo with ``_current.reset(token)`` via unbind_run."""
    return _current.set(context)


def unbind_run(token: Token[RunContext | None]) -> None:
    """Restore the run that was current before ``bind_run``."""
    _current.reset(token)


def emit_in_run(kind: type[Event], **fields: Any) -> None:
    """Emit an event of ``kind`` for the current run; does nothing outside a run."""
    context = _current.get()
    if context is not None:
        context.hooks.emit(
            kind(run_id=context.run_id, pipeline=context.pipeline, at=context.now(), **fields)
        )
