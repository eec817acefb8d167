"""Seeded fault schedules: which faults a chaos run injects, where, and how hard.

A plan is a frozen value drawn from ``random.Random(seed)`` alone, so a seed names one schedule
on every machine and every run::

    plan = FaultPlan.from_seed(7, kinds=("http_5xx", "outage", "kill"), batches=9)

Each fault triggers at a count (``at``, 1-based) of what its injector sees: the source's batch
pulls, the sink's writes, the batch's ordinal (the order in which batch ids were first read), or
the events of one kind (a kill). The counts run across restarts of one run (they are kept in a
``Journal``), so a fault fires once, however often the pipeline restarts.

=================  =========  ==================================================================
kind               injector   what happens
=================  =========  ==================================================================
``http_5xx``       source     a pull fails with ``SourceUnavailable`` (status 500/502/503/504)
``rate_limit``     source     a pull fails with ``RateLimited`` (429, ``retry_after_s``)
``timeout``        source     a pull waits ``seconds`` (on the clock), then ``SourceUnavailable``
``reset``          source     a pull fails with ``SourceUnavailable`` (connection reset)
``permanent``      source     a pull fails with ``SourceRejected`` (401): a human must act
``latency``        source     one pull is ``seconds`` late (a spike)
``slow``           source     ``span`` pulls in a row are each ``seconds`` late
``truncated``      source     ``span`` records of one batch are cut short (unparseable)
``malformed``      source     ``span`` records of one batch get a value that does not cast
``schema_change``  source     from batch ``at`` on, records carry a new column
``outage``         sink       ``span`` writes in a row fail with ``DestinationUnavailable``
``sink_latency``   sink       one write is ``seconds`` late
``kill``           process    SIGKILL at the ``at``-th event of kind ``event``
=================  =========  ==================================================================
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mendflow.exceptions import ConfigError

__all__ = [
    "CORRUPTING",
    "FAULT_KINDS",
    "KILL_EVENTS",
    "PERMANENT",
    "RECOVERABLE",
    "SINK_KINDS",
    "SOURCE_DELAYS",
    "SOURCE_ERRORS",
    "Fault",
    "FaultPlan",
    "parse_kinds",
]

#: Source faults that fail a pull (the permanent one too).
SOURCE_ERRORS: Final = ("http_5xx", "rate_limit", "timeout", "reset", "permanent")
SOURCE_DELAYS: Final = ("latency", "slow")
#: Faults that change records: what they touch is dead-lettered or gains a column, by design.
CORRUPTING: Final = ("truncated", "malformed", "schema_change")
SINK_KINDS: Final = ("outage", "sink_latency")
FAULT_KINDS: Final = (*SOURCE_ERRORS, *SOURCE_DELAYS, *CORRUPTING, *SINK_KINDS, "kill")
#: The kinds that must heal with nobody paged, and the one that must page exactly once.
PERMANENT: Final = frozenset({"permanent"})
RECOVERABLE: Final = tuple(k for k in FAULT_KINDS if k not in PERMANENT)
#: The runner's events a kill may hit: after reading, after preparing, inside the open
#: transaction (before COMMIT), after COMMIT.
KILL_EVENTS: Final = ("batch.read", "batch.transformed", "batch.staged", "batch.loaded")


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: its kind, the count it fires at, and its size (see the module's table).

    ``pick`` seeds what is chosen inside a batch (which rows) or how a fault behaves (an odd
    ``pick`` makes an outage's first failure happen inside the open transaction).
    """

    kind: str
    at: int
    span: int = 1
    seconds: float = 0.0
    status: int = 0
    event: str = ""
    pick: int = 0

    @property
    def id(self) -> str:
        """Names the fault in a journal and a report: ``kind@at``."""
        return f"{self.kind}@{self.at}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, without the fields the kind does not use."""
        out: dict[str, Any] = {"kind": self.kind, "at": self.at}
        for name in ("span", "seconds", "status", "event"):
            value = getattr(self, name)
            if value and not (name == "span" and value == 1):
                out[name] = round(value, 3) if isinstance(value, float) else value
        return out


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The faults of one seed, in the order they were drawn."""

    seed: int
    faults: tuple[Fault, ...] = ()

    @classmethod
    def from_seed(
        cls,
        seed: int,
        *,
        kinds: Sequence[str] = FAULT_KINDS,
        batches: int = 9,
        max_faults: int = 3,
    ) -> FaultPlan:
        """Draw a plan: the kind ``kinds[seed % len(kinds)]`` (so consecutive seeds cover every
        kind), then up to ``max_faults - 1`` other kinds, each at most once, all within the
        first ``batches`` batches (the reference run's count)."""
        kinds = parse_kinds(kinds)
        if batches < 1 or max_faults < 1:
            raise ConfigError(f"batches={batches}, max_faults={max_faults}: use values >= 1.")
        rng = random.Random(seed)  # noqa: S311 - reproducible schedules, not secrets
        first = kinds[seed % len(kinds)]
        rest = [k for k in kinds if k != first]
        chosen = [first, *rng.sample(rest, rng.randint(0, min(max_faults - 1, len(rest))))]
        return cls(seed, tuple(_draw(kind, rng, batches) for kind in chosen))

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds the plan holds."""
        return frozenset(f.kind for f in self.faults)

    def of(self, kinds: Iterable[str]) -> tuple[Fault, ...]:
        """The plan's faults of ``kinds``."""
        wanted = set(kinds)
        return tuple(f for f in self.faults if f.kind in wanted)


def _draw(kind: str, rng: random.Random, batches: int) -> Fault:
    """One fault of ``kind``, its trigger and size drawn from ``rng``."""
    at = rng.randint(1, batches)
    pick = rng.randrange(1 << 30)
    if kind == "http_5xx":
        return Fault(kind, at, status=rng.choice((500, 502, 503, 504)))
    if kind == "rate_limit":
        return Fault(kind, at, status=429, seconds=float(rng.choice((1, 2, 5, 30))))
    if kind == "timeout":
        return Fault(kind, at, seconds=round(rng.uniform(5.0, 30.0), 3))
    if kind == "permanent":
        return Fault(kind, at, status=401)
    if kind == "latency":
        return Fault(kind, at, seconds=round(rng.uniform(2.0, 30.0), 3))
    if kind == "slow":
        return Fault(kind, at, span=rng.randint(2, 4), seconds=round(rng.uniform(0.5, 3.0), 3))
    if kind in ("truncated", "malformed"):
        return Fault(kind, at, span=rng.randint(1, 3), pick=pick)
    if kind == "schema_change":
        return Fault(kind, rng.randint(min(2, batches), batches))
    if kind == "outage":
        return Fault(kind, at, span=rng.randint(1, 6), pick=pick)
    if kind == "sink_latency":
        return Fault(kind, at, seconds=round(rng.uniform(2.0, 30.0), 3))
    if kind == "kill":
        return Fault(kind, at, event=rng.choice(KILL_EVENTS))
    return Fault(kind, at)  # "reset"


def parse_kinds(kinds: str | Iterable[str]) -> tuple[str, ...]:
    """Fault kinds from ``"a,b"`` or a list, checked, duplicates dropped, in order."""
    items = kinds.split(",") if isinstance(kinds, str) else list(kinds)
    out: list[str] = []
    for item in (i.strip() for i in items):
        if item and item not in out:
            if item not in FAULT_KINDS:
                raise ConfigError(
                    f"unknown fault kind {item!r}; use some of: {', '.join(FAULT_KINDS)}."
                )
            out.append(item)
    if not out:
        raise ConfigError(f"no fault kinds given; use some of: {', '.join(FAULT_KINDS)}.")
    return tuple(out)
