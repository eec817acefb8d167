"""Resilience primitives that wrap a request or a batch, never a row."""

from mendflow.resilience.breaker import (
    BreakerPolicy,
    BreakerRecord,
    BreakerState,
    BreakerStore,
    CircuitBreaker,
    MemoryBreakerStore,
)
from mendflow.resilience.budget import RetryBudget
from mendflow.resilience.retry import Retry, retrying, retrying_async

__all__ = [
    "BreakerPolicy",
    "BreakerRecord",
    "BreakerState",
    "BreakerStore",
    "CircuitBreaker",
    "MemoryBreakerStore",
    "Retry",
    "RetryBudget",
    "retrying",
    "retrying_async",
]
