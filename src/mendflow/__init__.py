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

from mendflow.batch import Batch, Load, Position, WriteMode
from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.events import Event, Hooks
from mendflow.exceptions import (
    BadData,
    ConfigError,
    DependencyDown,
    DestinationError,
    DestinationUnavailable,
    Interrupted,
    MendflowError,
    PermanentError,
    RateLimited,
    ResourceExhausted,
    SchemaMismatch,
    SourceRejected,
    SourceUnavailable,
    TransformError,
    TransientError,
)
from mendflow.pipeline import Pipeline, RunResult
from mendflow.resilience import BreakerPolicy, BreakerState, CircuitBreaker, Retry, retrying
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
from mendflow.typing import Hook, Sink, Source, Transform

__version__ = "0.1.0"

__all__ = [
    "SYSTEM_CLOCK",
    "BadData",
    "Batch",
    "BreakerPolicy",
    "BreakerState",
    "CircuitBreaker",
    "Clock",
    "ConfigError",
    "DependencyDown",
    "DestinationError",
    "DestinationUnavailable",
    "DuckDBSink",
    "Event",
    "FallbackSource",
    "FileSource",
    "Hook",
    "Hooks",
    "HttpSource",
    "Interrupted",
    "Load",
    "MendflowError",
    "Pagination",
    "PermanentError",
    "Pipeline",
    "Position",
    "RateLimited",
    "ResourceExhausted",
    "Retry",
    "RunResult",
    "SchemaMismatch",
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
    "WriteMode",
    "provenance",
    "retrying",
]
