"""Circuit-breaker state in the state store's ``mf_breakers`` table, shared by every process.

    store = SqlBreakerStore.from_url("sqlite:///.mendflow/state.db")
    breaker = CircuitBreaker("orders-api", store=store)

A row is written only when a breaker changes state, as a compare-and-set on ``version``: the
UPDATE matches the version the writer last saw, so of two processes tripping the same breaker one
wins and the other adopts its record. Driver errors that mean "the database cannot be reached
right now" become ``TransientError``; the breaker then keeps its own state until the store answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

import sqlalchemy as sa

from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.resilience.breaker import BreakerRecord, BreakerState
from mendflow.state._connect import translated
from mendflow.state.schema import breakers
from mendflow.state.store import StateStore


class SqlBreakerStore:
    """A ``BreakerStore`` on ``mf_breakers``: one SELECT to load, one UPDATE (or INSERT) to save."""

    def __init__(self, engine: sa.Engine, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.engine = engine
        self._clock = clock

    @classmethod
    def from_url(cls, url: str, *, clock: Clock = SYSTEM_CLOCK) -> SqlBreakerStore:
        """Open (and create, if needed) the state store at ``url`` and use its engine."""
        return cls(StateStore(url).engine, clock=clock)

    def load(self, dependency: str) -> BreakerRecord | None:
        query = sa.select(breakers).where(breakers.c.dependency == dependency)
        with self._translated(), self.engine.connect() as con:
            row = con.execute(query).first()
        if row is None:
            return None
        return BreakerRecord(
            row.dependency, BreakerState(row.state), row.opened_at, row.reason, row.version
        )

    def save(self, record: BreakerRecord, *, expected_version: int) -> bool:
        values = {
            "state": record.state.value,
            "opened_at": record.opened_at,
            "reason": record.reason,
            "version": expected_version + 1,
            "updated_at": self._clock.now(),
        }
        update = (
            breakers.update()
            .where(
                breakers.c.dependency == record.dependency,
                breakers.c.version == expected_version,
            )
            .values(**values)
        )
        try:
            with self._translated(), self.engine.begin() as con:
                if con.execute(update).rowcount == 1:
                    return True
                if expected_version != 0:
                    return False
                con.execute(breakers.insert().values(dependency=record.dependency, **values))
                return True
        except sa.exc.IntegrityError:
            return False  # another process inserted the first record: a lost compare-and-set

    def _translated(self) -> AbstractContextManager[None]:
        """Raise "cannot reach the database" driver errors as ``TransientError`` (password
        masked); the breaker keeps its local state until the store answers again."""
        return translated(self.engine.url, what="the breaker state store")


__all__: Sequence[str] = ("SqlBreakerStore",)
