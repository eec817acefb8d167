"""mendflow: self-healing data pipelines whose loads are exactly-once.

    from mendflow import DuckDBSink, FileSource, Pipeline

    result = Pipeline(
        name="orders",
        source=FileSource("drops/*.jsonl"),
        destination=DuckDBSink("warehouse.duckdb", table="orders"),
        write_mode="merge",
        primary_key=("id",),
    ).run()
"""

from mendflow.batch import (
    Audit,
    Batch,
    Committed,
    Finding,
    Load,
    Position,
    SchemaPolicy,
    WriteMode,
)
from mendflow.checks import Freshness, NullRate, Reconciliation, UniqueKey, Volume
from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.contracts import Column, Contract, Expr, Length, Matches, OneOf, Range
from mendflow.deadletter import DeadLetter, Filter, ReplayResult, replay
from mendflow.events import Event, Hooks
from mendflow.exceptions import (
    BadData,
    CheckFailed,
    ConfigError,
    DependencyDown,
    DestinationError,
    DestinationUnavailable,
    Interrupted,
    MendflowError,
    PermanentError,
    PipelineBusy,
    RateLimited,
    ResourceExhausted,
    SchemaMismatch,
    SourceRejected,
    SourceUnavailable,
    TransformError,
    TransientError,
    UnknownPipeline,
)
from mendflow.pipeline import Pipeline, RunResult
from mendflow.resilience import BreakerPolicy, BreakerState, CircuitBreaker, Retry, retrying
from mendflow.schedule import Schedule, Window
from mendflow.sinks import DuckDBSink
from mendflow.sources import (
    FallbackSource,
    FileSource,
    HttpSource,
    Pagination,
    SnapshotSource,
    SnapshotStore,
    provenance,
)
from mendflow.state import StateStore
from mendflow.transforms import SqlTransform
from mendflow.typing import Check, Hook, Sink, Source, Transform

__version__ = "0.1.0"

__all__ = [
    "SYSTEM_CLOCK",
    "Audit",
    "BadData",
    "Batch",
    "BreakerPolicy",
    "BreakerState",
    "Check",
    "CheckFailed",
    "CircuitBreaker",
    "Clock",
    "Column",
    "Committed",
    "ConfigError",
    "Contract",
    "DeadLetter",
    "DependencyDown",
    "DestinationError",
    "DestinationUnavailable",
    "DuckDBSink",
    "Event",
    "Expr",
    "FallbackSource",
    "FileSource",
    "Filter",
    "Finding",
    "Freshness",
    "Hook",
    "Hooks",
    "HttpSource",
    "Interrupted",
    "Length",
    "Load",
    "Matches",
    "MendflowError",
    "NullRate",
    "OneOf",
    "Pagination",
    "PermanentError",
    "Pipeline",
    "PipelineBusy",
    "Position",
    "Range",
    "RateLimited",
    "Reconciliation",
    "ReplayResult",
    "ResourceExhausted",
    "Retry",
    "RunResult",
    "Schedule",
    "SchemaMismatch",
    "SchemaPolicy",
    "Sink",
    "SnapshotSource",
    "SnapshotStore",
    "Source",
    "SourceRejected",
    "SourceUnavailable",
    "SqlTransform",
    "StateStore",
    "Transform",
    "TransformError",
    "TransientError",
    "UniqueKey",
    "UnknownPipeline",
    "Volume",
    "Window",
    "WriteMode",
    "provenance",
    "replay",
    "retrying",
]
