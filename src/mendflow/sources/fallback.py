"""Fallback tiers for a source: the primary, then secondaries, then the last good snapshot.

    FallbackSource(
        HttpSource(orders_url, ..., name="primary"),
        HttpSource(replica_url, ..., name="secondary"),
        snapshots=SnapshotStore(".mendflow/snapshots"),
    )

A read tries the tiers in order. A tier that raises a ``TransientError`` (after its own retries:
``SourceUnavailable``, ``RateLimited``, ``DependencyDown``...) before it yielded a batch is
skipped for the next one. A ``PermanentError`` is no reason to fall back: it propagates, and so
does any error raised after a tier's first batch. When every tier fails, the primary's error is
raised, with a note naming each other tier's error. Each move to the next tier, and the return to
the primary (with its first batch after a fallback), is a ``TierSwitched`` event of the run.

Every batch tells who served it: ``provenance(batch)`` (also the ``b"mendflow.provenance"`` JSON
of ``batch.data``'s schema metadata) is ``{"tier": name, "tier_index": i, "stale_s": s}``, where
``s`` is the age of the snapshot served (0 for live tiers); ``batch.source`` is the tier's name and
``batch.id`` is the tier's own id prefixed with its name. The position keeps one per tier::

    {"tiers": {<tier name>: <that tier's own position>},
     "fallback": None | {"since": <primary position when the primary failed>, "tier": <name>}}

A position that is not of this shape (the checkpoint of a pipeline whose source was the primary
alone) is taken as the primary's.

Convergence: when the primary is back, what a fallback served is read again from the primary, so
with a merge on a primary key the destination converges to the primary's data. While a fallback
serves, the primary's position stays where it failed (``fallback.since``); the first read that
finds the primary healthy reads it again from there, and ``fallback`` is cleared with that read's
first batch. That re-read covers everything served since because no tier serves rows from before
``fallback.since``:

* A live fallback is taken for a replica of the primary, with positions of the same meaning: a
  fallback episode starts it from the primary's position (``fallback.since``), never from its own
  older one; it resumes its own only while it keeps serving that episode. Pass
  ``shared_positions=False`` for fallbacks whose positions mean something else (another API,
  another cursor): each then reads from its own position, and rows it serves from before
  ``fallback.since`` keep its values until the primary sends them again.
* The snapshot is the primary's last *complete* extract, recorded as the primary's batches are
  read and published when that read completes, with the primary's position at its end (for an
  incremental primary, the rows of its last read). It is served only when taken at
  ``fallback.since`` (or when nothing of the primary is loaded yet): its rows then hold the
  primary's values as loaded, and a row the primary changed after it is after ``fallback.since``,
  so the re-read brings it. A snapshot taken elsewhere (a later read of the primary failed after
  loading some batches) could put older values back, so that tier fails instead. Served as the last
  tier, a snapshot is read once; a newer snapshot is read from its start.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa

from mendflow.batch import Batch, Position
from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.events import TierSwitched, emit_in_run
from mendflow.exceptions import ConfigError, MendflowError, TransientError
from mendflow.sources.snapshot import Snapshot, SnapshotSource, SnapshotStore, SnapshotTaking
from mendflow.typing import Source

__all__ = [
    "PROVENANCE_KEY",
    "FallbackSource",
    "Snapshot",
    "SnapshotSource",
    "SnapshotStore",
    "provenance",
]

#: The schema metadata key of ``batch.data`` that holds a batch's provenance as JSON.
PROVENANCE_KEY: Final = b"mendflow.provenance"


def provenance(batch: Batch | pa.Table) -> dict[str, Any]:
    """Which tier served ``batch`` and how stale it is; {} when no FallbackSource served it."""
    data = batch.data if isinstance(batch, Batch) else batch
    raw = (data.schema.metadata or {}).get(PROVENANCE_KEY)
    if raw is None:
        return {}
    facts: dict[str, Any] = json.loads(raw)
    return facts


class FallbackSource:
    """Read the first tier that answers: the primary, each fallback, then the last snapshot.

    ``shared_positions`` (default True) says the fallbacks are replicas whose positions mean what
    the primary's do, so a fallback episode starts them from the primary's position; see the
    module docstring.
    """

    def __init__(
        self,
        primary: Source,
        *fallbacks: Source,
        snapshots: SnapshotStore | None = None,
        shared_positions: bool = True,
        name: str = "",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.primary = primary
        self.fallbacks = fallbacks
        self.snapshots = snapshots
        self.shared_positions = shared_positions
        self.clock = clock
        self.name = name or f"fallback:{primary.name}"
        last = () if snapshots is None else (SnapshotSource(snapshots, primary.name),)
        self.tiers: tuple[Source, ...] = (primary, *fallbacks, *last)
        _check_names(self.tiers)

    def read(self, position: Position) -> Iterator[Batch]:
        """Yield the batches of the first tier that does not fail transiently before its first."""
        state = _State.parse(position, self.primary.name)
        failures: list[TransientError] = []
        for index in range(len(self.tiers)):
            batches = self._primary(state) if index == 0 else self._fallback(index, state)
            try:
                first = next(batches, None)
            except TransientError as exc:
                failures.append(exc)
                self._switched(index, exc)
                continue
            except MendflowError as exc:
                _note_failures(exc, failures, self.tiers)
                raise
            try:
                if first is not None:
                    self._returned(index, state)
                    yield first
                    yield from batches
            finally:
                batches.close()
            return
        _note_failures(failures[0], failures[1:], self.tiers[1:])
        raise failures[0]

    def reading_as_text(self, columns: Iterable[str]) -> FallbackSource:
        """A copy whose tiers read ``columns`` as raw text, where they can."""
        wanted = tuple(columns)

        def as_text(source: Source) -> Source:
            method = getattr(source, "reading_as_text", None)
            return method(wanted) if callable(method) else source

        return FallbackSource(
            as_text(self.primary),
            *(as_text(source) for source in self.fallbacks),
            snapshots=self.snapshots,
            shared_positions=self.shared_positions,
            name=self.name,
            clock=self.clock,
        )

    def _primary(self, state: _State) -> Generator[Batch, None, None]:
        """The primary's batches, from ``fallback.since`` after a fallback; each is recorded in
        the snapshot being taken, which is published only if the read completes."""
        name = self.primary.name
        start = state.since
        taking = SnapshotTaking(self.snapshots, name)
        end, completed = start, False
        try:
            for inner in self.primary.read(start):
                taking.record(inner)
                end = inner.position
                yield self._batch(0, inner, {**state.tiers, name: inner.position}, None)
            completed = True
        finally:
            taking.finish(completed=completed, position=end, taken_at=self.clock.now())

    def _fallback(self, index: int, state: _State) -> Generator[Batch, None, None]:
        """Tier ``index``'s batches, none from before ``since``; the primary's position stays."""
        tier = self.tiers[index]
        fallback = {"since": state.since, "tier": tier.name}
        tiers = dict(state.tiers)
        if isinstance(tier, SnapshotSource):
            batches = tier.read(tiers.get(tier.name, {}), source_position=state.since)
        else:
            batches = tier.read(self._start(tier, state))
        for inner in batches:
            tiers = {**tiers, tier.name: inner.position}
            yield self._batch(index, inner, tiers, fallback)

    def _start(self, tier: Source, state: _State) -> Position:
        """Where live fallback ``tier`` reads from: its own position while it serves this
        episode, else the primary's (``since``), or its own when positions are not shared."""
        own = state.tiers.get(tier.name)
        serving = state.fallback is not None and state.fallback.get("tier") == tier.name
        if own is not None and (serving or not self.shared_positions):
            return own
        return state.since if self.shared_positions else {}

    def _batch(
        self, index: int, inner: Batch, tiers: dict[str, Position], fallback: Position | None
    ) -> Batch:
        """``inner`` as served by tier ``index``: its id prefixed, its provenance attached."""
        tier = self.tiers[index]
        stale_s = 0.0
        if isinstance(tier, SnapshotSource):
            stale_s = round(max(0.0, self.clock.now() - float(inner.position["taken_at"])), 6)
        facts = {"tier": tier.name, "tier_index": index, "stale_s": stale_s}
        metadata = {**(inner.data.schema.metadata or {}), PROVENANCE_KEY: json.dumps(facts)}
        return Batch(
            id=f"{tier.name}:{inner.id}",
            data=inner.data.replace_schema_metadata(metadata),
            position={"tiers": tiers, "fallback": fallback},
            source=tier.name,
        )

    def _switched(self, index: int, error: TransientError) -> None:
        """Tell the run that tier ``index`` failed with ``error`` and the next one reads."""
        if index + 1 < len(self.tiers):
            failed, next_tier = self.tiers[index].name, self.tiers[index + 1].name
            emit_in_run(
                TierSwitched,
                dependency=failed,
                previous=failed,
                tier=next_tier,
                reason=f"{failed!r} failed before its first batch; {next_tier!r} serves instead",
                error_type=type(error).__name__,
            )

    def _returned(self, index: int, state: _State) -> None:
        """Tell the run that the primary serves again after a fallback episode."""
        if index == 0 and state.fallback is not None:
            emit_in_run(
                TierSwitched,
                dependency=self.primary.name,
                previous=str(state.fallback.get("tier", "")),
                tier=self.primary.name,
                reason="primary healthy again; re-reading from where it failed",
                error_type="",
            )


@dataclass(frozen=True, slots=True)
class _State:
    """A FallbackSource position, read: each tier's position and the open fallback, if any."""

    primary: str
    tiers: dict[str, Position]
    fallback: dict[str, Any] | None

    @property
    def since(self) -> Position:
        """Where the primary stands: where it failed, during a fallback."""
        if self.fallback is not None:
            since: Position = self.fallback["since"]
            return since
        return self.tiers.get(self.primary, {})

    @classmethod
    def parse(cls, position: Position, primary: str) -> _State:
        if position and "tiers" not in position:  # the primary's checkpoint from before
            return cls(primary, {primary: dict(position)}, None)
        tiers, fallback = position.get("tiers", {}), position.get("fallback")
        valid_fallback = fallback is None or (
            isinstance(fallback, dict) and isinstance(fallback.get("since"), dict)
        )
        if not isinstance(tiers, dict) or not valid_fallback:
            raise ConfigError(
                f"position {position!r} was not written by a FallbackSource; reset the "
                "pipeline's checkpoint or point it at the source that wrote it."
            )
        return cls(primary, tiers, fallback)


def _check_names(tiers: tuple[Source, ...]) -> None:
    names = [tier.name for tier in tiers]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated or not all(names):
        raise ConfigError(
            f"the tiers of a FallbackSource need distinct, non-empty names (got {names}); "
            "pass name=... to each source."
        )


def _note_failures(
    error: BaseException, failures: list[TransientError], tiers: tuple[Source, ...]
) -> None:
    """Note on ``error`` what each earlier (or later) tier failed with."""
    for tier, failure in zip(tiers, failures, strict=False):
        error.add_note(f"tier {tier.name!r} failed too: {type(failure).__name__}: {failure}")
