"""What kind of failure an exception is: decided by its type (and the status it carries).

Driver errors are translated into mendflow's exceptions where they enter, so by the time an error
reaches diagnosis its class says what it is. Nothing here reads message text.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from enum import StrEnum

from mendflow import exceptions
from mendflow.exceptions import (
    BadData,
    ConfigError,
    DependencyDown,
    Interrupted,
    MendflowError,
    PermanentError,
    RateLimited,
    ResourceExhausted,
    SchemaMismatch,
    TransformError,
    TransientError,
)


class FailureClass(StrEnum):
    """The failure classes healing distinguishes."""

    TRANSIENT = "transient"
    RATE_LIMITED = "rate_limited"
    DEPENDENCY_DOWN = "dependency_down"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    BAD_DATA = "bad_data"
    SCHEMA_DRIFT = "schema_drift"
    PERMANENT = "permanent"
    CONFIG = "config"
    INTERRUPTED = "interrupted"
    BUG = "bug"
    #: Found by the service rather than raised by a run: the data is older than its
    #: ``freshness_s`` (an alert says so), or the worker running it stopped heartbeating.
    STALE = "stale"
    WORKER_LOST = "worker_lost"


#: Most specific first: the first class the exception is an instance of decides.
RULES: tuple[tuple[type[BaseException], FailureClass], ...] = (
    (RateLimited, FailureClass.RATE_LIMITED),
    (DependencyDown, FailureClass.DEPENDENCY_DOWN),
    (ResourceExhausted, FailureClass.RESOURCE_EXHAUSTED),
    (MemoryError, FailureClass.RESOURCE_EXHAUSTED),
    (TransientError, FailureClass.TRANSIENT),
    (BadData, FailureClass.BAD_DATA),
    (SchemaMismatch, FailureClass.SCHEMA_DRIFT),
    (TransformError, FailureClass.PERMANENT),
    (PermanentError, FailureClass.PERMANENT),
    (ConfigError, FailureClass.CONFIG),
    (Interrupted, FailureClass.INTERRUPTED),
    (KeyboardInterrupt, FailureClass.INTERRUPTED),
    (BaseException, FailureClass.BUG),
)


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """The class of a failure and its evidence."""

    failure_class: FailureClass
    dependency: str
    error_type: str
    status: int | None
    message: str

    @property
    def healable(self) -> bool:
        """True when an automatic action may fix it (not permanent, not config, not a bug)."""
        return self.failure_class not in _FINAL

    def evidence(self) -> dict[str, object]:
        """JSON-ready evidence for the ledger."""
        return {
            "failure_class": str(self.failure_class),
            "dependency": self.dependency,
            "error_type": self.error_type,
            "status": self.status,
            "message": self.message,
        }


_FINAL = frozenset(
    {FailureClass.PERMANENT, FailureClass.CONFIG, FailureClass.INTERRUPTED, FailureClass.BUG}
)


def diagnose(exc: BaseException) -> Diagnosis:
    """Classify ``exc`` by its type; the first matching rule wins."""
    failure = next(kind for cls, kind in RULES if isinstance(exc, cls))
    dependency = exc.dependency if isinstance(exc, MendflowError) else ""
    status = exc.status if isinstance(exc, MendflowError) else None
    return Diagnosis(failure, dependency, type(exc).__name__, status, str(exc))


def failure_class_of(error_type: str) -> FailureClass:
    """The class of a mendflow error named by its class name (as events carry it)."""
    kind = getattr(exceptions, error_type, None) or getattr(builtins, error_type, None)
    if not (isinstance(kind, type) and issubclass(kind, BaseException)):
        return FailureClass.BUG
    return next(failure for cls, failure in RULES if issubclass(kind, cls))
