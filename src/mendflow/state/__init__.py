"""The state store: runs, batches, attempts and the event log."""

from mendflow.state.store import StateStore, default_state_url

__all__ = ["StateStore", "default_state_url"]
