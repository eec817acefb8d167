"""Resilience primitives that wrap a request or a batch, never a row."""

from mendflow.resilience.retry import Retry, retrying

__all__ = ["Retry", "retrying"]
