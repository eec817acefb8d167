"""The state store: runs, batches, attempts, the event log, breakers and the healing ledger."""

from mendflow.state.breakers import SqlBreakerStore
from mendflow.state.store import StateStore, default_state_url

__all__ = ["SqlBreakerStore", "StateStore", "default_state_url"]
