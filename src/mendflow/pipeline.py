"""A pipeline: a source, transforms and a destination, with a write mode and a primary key.

    pipeline = Pipeline(
        name="orders",
        source=FileSource("drops/*.jsonl"),
        destination=DuckDBSink("warehouse.duckdb", table="orders"),
        write_mode="merge",
        primary_key=("id",),
        columns={"amount": "double", "updated_at": "timestamptz"},
    )
    result = pipeline.run()
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mendflow._sql import sql_type
from mendflow.batch import SCHEMA_POLICIES, WRITE_MODES, Position, SchemaPolicy, WriteMode
from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.contracts.contract import Contract
from mendflow.exceptions import ConfigError
from mendflow.resilience.breaker import BreakerPolicy
from mendflow.resilience.retry import Retry
from mendflow.typing import Check, Hook, Sink, Source, Transform

if TYPE_CHECKING:
    from mendflow.state.store import StateStore

#: Holding a batch while the destination is down: retried with backoff for up to 10 minutes.
DESTINATION_RETRY = Retry(attempts=1_000, base_s=0.5, cap_s=30.0, deadline_s=600.0)

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Pipeline:
    """What to read, how to shape it, and where and how to load it.

    ``columns`` declares types (``double``, ``bigint``, ``timestamptz``, ``decimal(12,2)``...):
    values that do not cast become dead letters instead of failing the run. It is shorthand for
    a ``contract`` of types only; given both, they are merged, and for a column in both the
    contract's declaration wins (see ``record_contract``).
    """

    name: str
    source: Source
    destination: Sink
    transforms: Sequence[Transform] = ()
    write_mode: WriteMode = "append"
    primary_key: Sequence[str] = ()
    columns: Mapping[str, str] = field(default_factory=dict)
    #: The record contract: column types, nullability and checks; failing rows are dead letters.
    contract: Contract | None = None
    #: What a schema change meets at the destination: evolve, freeze or discard_columns.
    schema: SchemaPolicy = "evolve"
    #: Audits run on each batch inside its load transaction, before it is published.
    checks: Sequence[Check] = ()
    #: How many times ``mendflow dlq replay`` tries a dead letter before leaving it to a person.
    max_replays: int = 3
    #: The destination's circuit breaker (None: no breaker), and how long a batch is held and
    #: its write retried while the destination is down or its breaker is open.
    destination_breaker: BreakerPolicy | None = field(default_factory=BreakerPolicy)
    destination_retry: Retry = DESTINATION_RETRY

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ConfigError(
                f"pipeline name {self.name!r} is not valid; use letters, digits, '_', '-' or '.'."
            )
        if self.write_mode not in WRITE_MODES:
            raise ConfigError(
                f"unknown write mode {self.write_mode!r}; use one of: {', '.join(WRITE_MODES)}."
            )
        if self.schema not in SCHEMA_POLICIES:
            raise ConfigError(
                f"unknown schema policy {self.schema!r}; use one of: {', '.join(SCHEMA_POLICIES)}."
            )
        if isinstance(self.max_replays, bool) or not isinstance(self.max_replays, int) or (
            self.max_replays < 1
        ):
            raise ConfigError(f"max_replays must be a whole number >= 1, not {self.max_replays!r}.")
        object.__setattr__(self, "checks", tuple(self.checks))
        key = (self.primary_key,) if isinstance(self.primary_key, str) else self.primary_key
        object.__setattr__(self, "primary_key", tuple(key))
        object.__setattr__(self, "transforms", tuple(self.transforms))
        if self.write_mode == "merge" and not self.primary_key:
            raise ConfigError(
                f"pipeline {self.name!r} merges but has no primary key; set `primary_key:` to the "
                "column(s) that identify a row, or use write_mode append."
            )
        for column, kind in self.columns.items():
            try:
                sql_type(kind)
            except ConfigError as exc:
                raise ConfigError(f"column {column!r}: {exc}") from None

    @property
    def types(self) -> dict[str, str]:
        """The declared columns with their DuckDB types (``columns`` and the contract's)."""
        contract = self.record_contract
        return {} if contract is None else {n: c.sql_type for n, c in contract.columns.items()}

    @property
    def record_contract(self) -> Contract | None:
        """The contract rows are validated against: ``contract``, with the columns declared
        only in ``columns`` added as types; None when neither is given."""
        if not self.columns:
            return self.contract
        shorthand = Contract.of_types(self.columns)
        return shorthand if self.contract is None else shorthand.merged(self.contract)

    def run(
        self,
        *,
        hooks: Iterable[Hook] = (),
        state: StateStore | str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        quarantine: Mapping[str, BaseException] | None = None,
    ) -> RunResult:
        """Run once: read what is new, load it exactly once, and return what happened.

        ``quarantine`` maps batch ids to the error that made them fail: those batches go whole
        to the dead-letter store instead of the table (healing sets this).
        """
        from mendflow._runner import run

        return run(self, hooks=hooks, state=state, clock=clock, quarantine=quarantine or {})


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """The outcome of one run."""

    run_id: str
    pipeline: str
    rows_read: int
    rows_loaded: int
    dead_letters: int
    batches: int
    skipped: int
    duration_s: float
    position: Position

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {k: getattr(self, k) for k in self.__slots__}
