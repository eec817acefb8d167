"""A source wrapper that injects faults at batch boundaries: ``FaultySource(source, plan)``.

Errors are mendflow's own, as a real source's translated driver errors would be: a 5xx, a reset
connection or a timeout is ``SourceUnavailable``, a 429 ``RateLimited`` with ``retry_after_s``, a
401 ``SourceRejected``. Delays go through the injected clock. Corruption changes the records of
one batch (by its ordinal), identically each time that batch is read again, so the pipeline's
contract must dead-letter them: a truncated record becomes a parse reject of its cut bytes, a
malformed one gets a value in ``column`` that does not cast. A schema change adds the column
``chaos_v2`` to every batch from one ordinal on. A permanent fault, like expired credentials,
fails every pull from its own on until ``clear`` says a human fixed it. What each corruption
touched is noted in the journal for the checker: the keys, the digest of each dead letter's
bytes, and the digest of each record's original bytes (a record that was a dead letter already
is one no more once corrupted: its corrupted bytes are).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa

from mendflow.batch import DEAD_LETTER_SCHEMA, Batch, Position
from mendflow.chaos.journal import Journal
from mendflow.chaos.plan import PERMANENT, SOURCE_DELAYS, SOURCE_ERRORS, Fault, FaultPlan
from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.exceptions import (
    MendflowError,
    RateLimited,
    SourceRejected,
    SourceUnavailable,
)
from mendflow.typing import Source

__all__ = ["NEW_COLUMN", "FaultySource", "clear", "digest", "error_due"]

#: The column a ``schema_change`` fault adds, and its value.
NEW_COLUMN, NEW_VALUE = "chaos_v2", "v2"
_MALFORMED = "!chaos-malformed"


class FaultySource:
    """``inner``, with the source faults of ``plan`` injected (a ``mendflow.typing.Source``).

    ``key`` names the columns that identify a record (noted for corrupted records); ``column`` is
    the declared, non-text column a ``malformed`` fault breaks.
    """

    def __init__(
        self,
        inner: Source,
        plan: FaultPlan,
        *,
        journal: Journal | None = None,
        clock: Clock = SYSTEM_CLOCK,
        key: Sequence[str] = (),
        column: str | None = None,
    ) -> None:
        self.inner = inner
        self.plan = plan
        self.journal = journal or Journal()
        self.clock = clock
        self.key = tuple(key)
        self.column = column
        self.name: str = inner.name

    def read(self, position: Position) -> Iterator[Batch]:
        """The inner source's batches, each pull preceded by the faults due at it."""
        batches = iter(self.inner.read(position))
        while True:
            self._before_pull()
            try:
                batch = next(batches)
            except StopIteration:
                return
            yield self._shape(batch)

    def reading_as_text(self, columns: Iterable[str]) -> FaultySource:
        """The same faults over the inner source's text-reading copy (when it has one)."""
        as_text = getattr(self.inner, "reading_as_text", None)
        if not callable(as_text):
            return self
        return FaultySource(as_text(columns), self.plan, journal=self.journal, clock=self.clock,
                            key=self.key, column=self.column)

    def _before_pull(self) -> None:
        pulled, journal = self.journal.count("pull"), self.journal
        for fault in self.plan.of(SOURCE_DELAYS):
            if pulled < fault.at or journal.value(f"done:{fault.id}") >= fault.span:
                continue
            journal.fire(fault.id, fault.kind)
            journal.count(f"done:{fault.id}")
            self.clock.sleep(fault.seconds)
        for fault in self.plan.of(SOURCE_ERRORS):
            if error_due(journal, fault, pulled):
                journal.fire(fault.id, fault.kind)
                raise self._error(fault)

    def _error(self, fault: Fault) -> MendflowError:
        """The error a real source would have raised for ``fault``."""
        said = f"{self.name}: injected by mendflow chaos (seed {self.plan.seed}, {fault.id})"
        retried = "mendflow retries with backoff"
        if fault.kind == "rate_limit":
            return RateLimited(f"{said}: 429 Too Many Requests; mendflow waits as told.",
                               dependency=self.name, status=429, retry_after_s=fault.seconds)
        if fault.kind == "permanent":
            return SourceRejected(f"{said}: 401 Unauthorized; renew the credentials.",
                                  dependency=self.name, status=fault.status)
        if fault.kind == "timeout":
            self.clock.sleep(fault.seconds)
            return SourceUnavailable(f"{said}: timed out after {fault.seconds:g}s; {retried}.",
                                     dependency=self.name)
        if fault.kind == "reset":
            return SourceUnavailable(f"{said}: connection reset by peer; {retried}.",
                                     dependency=self.name)
        return SourceUnavailable(f"{said}: answered {fault.status}; {retried}.",
                                 dependency=self.name, status=fault.status)

    def _shape(self, batch: Batch) -> Batch:
        """Apply the schema change and the corruptions due at this batch's ordinal."""
        ordinal = self.journal.ordinal(batch.id)
        data, raw, rejects = batch.data, batch.raw, batch.rejects
        for fault in self.plan.of(("schema_change",)):
            if ordinal >= fault.at and data.num_rows:
                self.journal.fire(fault.id, fault.kind)
                data = data.append_column(NEW_COLUMN, pa.array([NEW_VALUE] * data.num_rows))
        for fault in self.plan.of(("truncated", "malformed")):
            if fault.at != ordinal or not data.num_rows:
                continue
            if fault.kind == "malformed" and self.column not in data.column_names:
                continue
            picker = random.Random(fault.pick)  # noqa: S311 - the same rows on every re-read
            rows = sorted(picker.sample(range(data.num_rows), min(fault.span, data.num_rows)))
            keys = [_key_text(data, self.key, i) for i in rows]
            originals = [digest(_record(data, raw, i)) if raw is not None else None for i in rows]
            if fault.kind == "truncated":
                data, raw, rejects, cut = _truncate(data, raw, rejects, rows)
            else:
                data, raw, cut = _malform(data, raw, rows, str(self.column))
            if not self.journal.fired(fault.id):
                self.journal.note("corrupted", kind=fault.kind, keys=keys, originals=originals,
                                  records=[None if c is None else digest(c) for c in cut])
                self.journal.fire(fault.id, fault.kind)
        if data is batch.data:
            return batch
        return Batch(id=batch.id, data=data, position=batch.position, source=batch.source,
                     rejects=rejects, raw=raw)


def error_due(journal: Journal, fault: Fault, count: int) -> bool:
    """Whether an error fault fails the call numbered ``count``: a transient one once, a
    permanent one on every call from its own on, until someone clears it (``clear``)."""
    if count < fault.at:
        return False
    if fault.kind in PERMANENT:
        return not journal.value(f"cleared:{fault.id}")
    return not journal.fired(fault.id)


def clear(journal: Journal, plan: FaultPlan) -> None:
    """What a human does after a page: fix the permanent faults that fired (new credentials)."""
    for fault in plan.of(PERMANENT):
        if journal.fired(fault.id) and not journal.value(f"cleared:{fault.id}"):
            journal.count(f"cleared:{fault.id}")


def digest(record: bytes) -> str:
    """The md5 hex of a dead letter's bytes, as the checker computes it in the destination."""
    return hashlib.md5(record, usedforsecurity=False).hexdigest()


def _key_text(data: pa.Table, key: Sequence[str], row: int) -> str:
    """A row's key as text, columns joined by ``|`` (the checker builds the same in SQL)."""
    return "|".join(str(data[name][row].as_py()) for name in key if name in data.column_names)


def _record(data: pa.Table, raw: pa.Array | None, row: int) -> bytes:
    if raw is not None:
        value = raw[row].as_py()
        return value if isinstance(value, bytes) else str(value).encode()
    return json.dumps(data.slice(row, 1).to_pylist()[0], default=str).encode()


def _truncate(
    data: pa.Table, raw: pa.Array | None, rejects: pa.Table, rows: list[int]
) -> tuple[pa.Table, pa.Array | None, pa.Table, list[bytes | None]]:
    """Cut ``rows`` short: they leave the rows and become parse rejects of their cut bytes."""
    cut: list[bytes | None] = []
    for row in rows:
        whole = _record(data, raw, row)
        cut.append(whole[: max(1, len(whole) // 2)])
    reason = "record cut short (truncated by mendflow chaos); not valid JSON"
    checks = json.dumps([{"check": "parse", "column": None, "message": reason}])
    added = pa.table(
        [pa.array(rows, pa.int64()), pa.array(["parse"] * len(rows)),
         pa.array([reason] * len(rows)), pa.array([checks] * len(rows)),
         pa.array(cut, pa.binary()), pa.array(["bytes"] * len(rows))],
        schema=DEAD_LETTER_SCHEMA,
    )
    keep = pa.array([i not in set(rows) for i in range(data.num_rows)])
    kept_raw = None if raw is None else raw.filter(keep)
    both = pa.concat_tables([rejects.cast(DEAD_LETTER_SCHEMA), added])
    return data.filter(keep), kept_raw, both, cut


def _malform(
    data: pa.Table, raw: pa.Array | None, rows: list[int], column: str
) -> tuple[pa.Table, pa.Array | None, list[bytes | None]]:
    """Give ``rows`` a value of ``column`` that does not cast (in the raw record too)."""
    values: list[Any] = data[column].cast(pa.string()).to_pylist()
    for row in rows:
        values[row] = _MALFORMED
    position = data.column_names.index(column)
    data = data.set_column(position, column, pa.array(values, pa.string()))
    if raw is None:
        return data, None, [None] * len(rows)
    lines: list[Any] = raw.to_pylist()
    cut: list[bytes | None] = []
    for row in rows:
        record = json.loads(lines[row])
        record[column] = _MALFORMED
        lines[row] = json.dumps(record).encode()
        cut.append(lines[row])
    return data, pa.array(lines, raw.type), cut
