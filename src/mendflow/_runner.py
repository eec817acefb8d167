"""The run loop: read -> coerce -> transform -> write with checkpoint, emitting events.

Reading and preparing a batch (parsing, casting declared types, transforms, one row per key for
merge) happen one batch ahead in a thread of their own, while the previous batch loads; events
are emitted from the runner's thread, in order. Everything that makes a load exactly-once lives
in the sink's transaction: the runner carries each batch's position to it, and resumes from the
position the sink says it committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from mendflow import _engine
from mendflow._arrow import last_per_key
from mendflow._guard import Guarded
from mendflow._readahead import read_ahead
from mendflow.batch import Batch, Load
from mendflow.clock import Clock
from mendflow.contracts.contract import Contract
from mendflow.contracts.validate import set_aside, validate
from mendflow.events import (
    BatchLoaded,
    BatchQuarantined,
    BatchRead,
    BatchSkipped,
    BatchStaged,
    BatchTransformed,
    Hooks,
    RunContext,
    RunFailed,
    RunFinished,
    RunStarted,
    bind_run,
    unbind_run,
)
from mendflow.exceptions import MendflowError, TransformError
from mendflow.pipeline import Pipeline, RunResult
from mendflow.remediation.ledger import Ledger
from mendflow.remediation.recorder import IncidentRecorder
from mendflow.resilience.registry import BreakerRegistry, use_breakers
from mendflow.typing import Hook, Source

if TYPE_CHECKING:
    from mendflow.state.store import StateStore


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A batch as read, and what goes on to the sink: rows to load and dead letters."""

    batch: Batch
    rows: pa.Table
    dead_letters: pa.Table
    quarantined: BaseException | None = None
    #: Rows the transforms filtered out or a merge superseded on purpose (negative: rows a
    #: transform added); the load accounts for the rest of the records read (reconciliation).
    dropped: int = 0


@dataclass(slots=True)
class _Tally:
    rows_read: int = 0
    rows_loaded: int = 0
    dead_letters: int = 0
    batches: int = 0
    skipped: int = 0


def run(
    pipeline: Pipeline,
    *,
    hooks: Iterable[Hook],
    state: StateStore | str | None,
    clock: Clock,
    quarantine: Mapping[str, BaseException],
) -> RunResult:
    """Run ``pipeline`` once; see ``Pipeline.run``."""
    bus = Hooks(hooks)
    store = _open_store(state)
    if store is not None:
        bus.add(store.record)
        bus.add(IncidentRecorder(Ledger(store)))
    registry = store.breakers(clock) if store is not None else BreakerRegistry(clock=clock)
    context = RunContext(uuid.uuid4().hex, pipeline.name, bus, clock.now)
    token = bind_run(context)
    started = clock.monotonic()
    try:
        with use_breakers(registry):
            return _run(pipeline, context, clock, started, quarantine)
    except BaseException as exc:
        bus.emit(
            RunFailed(
                run_id=context.run_id,
                pipeline=pipeline.name,
                at=clock.now(),
                error=str(exc) or type(exc).__name__,
                error_type=type(exc).__name__,
                retryable=isinstance(exc, MendflowError) and exc.retryable,
                duration_s=round(clock.monotonic() - started, 6),
            )
        )
        raise
    finally:
        unbind_run(token)
        pipeline.destination.close()
        if store is not None and isinstance(state, str):
            store.close()


def _run(
    pipeline: Pipeline,
    ctx: RunContext,
    clock: Clock,
    started: float,
    quarantine: Mapping[str, BaseException],
) -> RunResult:
    sink, mode = pipeline.destination, pipeline.write_mode
    guarded = Guarded(pipeline, clock)
    position = guarded(lambda: sink.position(pipeline.name, mode=mode))
    ctx.hooks.emit(
        RunStarted(
            run_id=ctx.run_id, pipeline=pipeline.name, at=clock.now(),
            write_mode=mode, checkpoint=position,
        )
    )
    tally = _Tally()
    batches = _source_for(pipeline).read(position)
    for prepared in read_ahead(_prepare(pipeline, batches, quarantine)):
        _load(pipeline, ctx, prepared, tally, guarded)
        position = prepared.batch.position
    guarded(lambda: sink.finish(pipeline.name, mode=mode))
    duration = round(clock.monotonic() - started, 6)
    ctx.hooks.emit(
        RunFinished(
            run_id=ctx.run_id, pipeline=pipeline.name, at=clock.now(),
            rows_read=tally.rows_read, rows_loaded=tally.rows_loaded,
            dead_letters=tally.dead_letters, batches=tally.batches,
            skipped=tally.skipped, duration_s=duration,
        )
    )
    return RunResult(
        run_id=ctx.run_id, pipeline=pipeline.name, rows_read=tally.rows_read,
        rows_loaded=tally.rows_loaded, dead_letters=tally.dead_letters, batches=tally.batches,
        skipped=tally.skipped, duration_s=duration, position=position,
    )


def _prepare(
    pipeline: Pipeline, batches: Iterator[Batch], quarantine: Mapping[str, BaseException]
) -> Iterator[_Prepared]:
    """Validate against the contract, transform and (for merge) keep one row per key, a whole
    batch at a time; a batch in ``quarantine`` goes whole to the dead letters instead."""
    merge = pipeline.write_mode == "merge"
    keys = tuple(pipeline.primary_key) if merge else ()
    contract = pipeline.record_contract or Contract()
    con = _engine.cursor()
    try:
        for batch in batches:
            error = quarantine.get(batch.id)
            if error is not None:
                reason = f"quarantined: {type(error).__name__}: {error}"
                dead = set_aside(con, batch.data, reason=reason, raw=batch.raw)
                yield _Prepared(batch, pa.table({}), _with_rejects(batch, dead), error)
                continue
            try:
                good, dead = validate(con, batch.data, contract, raw=batch.raw, keys=keys)
                valid = good.num_rows
                good = _transform(pipeline, good)
                if merge and good.num_rows:
                    good = last_per_key(good, keys)
            except MendflowError as exc:
                exc.batch_id, exc.stage = batch.id, "prepare"
                raise
            yield _Prepared(batch, good, _with_rejects(batch, dead), dropped=valid - good.num_rows)
    finally:
        con.close()


def _load(
    pipeline: Pipeline, ctx: RunContext, prepared: _Prepared, tally: _Tally, guarded: Guarded
) -> None:
    """Write one prepared batch, emitting an event at each step."""
    ids = {"run_id": ctx.run_id, "pipeline": pipeline.name}
    batch, good, dead = prepared.batch, prepared.rows, prepared.dead_letters
    rows = batch.records
    ctx.hooks.emit(
        BatchRead(**ids, at=ctx.now(), batch_id=batch.id, rows=rows, source=batch.source)
    )
    ctx.hooks.emit(
        BatchTransformed(
            **ids, at=ctx.now(), batch_id=batch.id, rows=good.num_rows, dead_letters=dead.num_rows
        )
    )
    load = Load(
        pipeline=pipeline.name, run_id=ctx.run_id, batch_id=batch.id, data=good,
        position=batch.position, dead_letters=dead, mode=pipeline.write_mode,
        primary_key=tuple(pipeline.primary_key), records=batch.records - prepared.dropped,
        schema=pipeline.schema, checks=tuple(pipeline.checks),
    )

    def staged() -> None:
        ctx.hooks.emit(BatchStaged(**ids, at=ctx.now(), batch_id=batch.id, rows=good.num_rows))

    tally.rows_read += rows
    try:
        written = guarded(lambda: pipeline.destination.write(load, on_staged=staged))
    except MendflowError as exc:
        exc.batch_id, exc.stage = batch.id, "write"
        raise
    if written and prepared.quarantined is not None:
        error = prepared.quarantined
        ctx.hooks.emit(
            BatchQuarantined(
                **ids, at=ctx.now(), batch_id=batch.id, rows=rows,
                reason=str(error), error_type=type(error).__name__,
            )
        )
    if written:
        tally.batches += 1
        tally.rows_loaded += written.rows
        tally.dead_letters += written.dead_letters
        ctx.hooks.emit(
            BatchLoaded(
                **ids, at=ctx.now(), batch_id=batch.id, rows=written.rows,
                dead_letters=written.dead_letters, checkpoint=batch.position,
            )
        )
    else:
        tally.skipped += 1
        ctx.hooks.emit(BatchSkipped(**ids, at=ctx.now(), batch_id=batch.id, rows=rows))


def _with_rejects(batch: Batch, dead: pa.Table) -> pa.Table:
    """The batch's dead letters: those the source could not parse, then the prepared ones."""
    if not batch.rejects.num_rows:
        return dead
    return pa.concat_tables([batch.rejects.cast(dead.schema), dead])


def _transform(pipeline: Pipeline, table: pa.Table) -> pa.Table:
    for number, transform in enumerate(pipeline.transforms, 1):
        try:
            table = transform(table)
        except MendflowError:
            raise
        except Exception as exc:
            name = getattr(transform, "__name__", type(transform).__name__)
            raise TransformError(
                f"transform #{number} ({name}) failed: {type(exc).__name__}: {exc}. Fix the "
                "transform and run again; nothing of this batch was loaded."
            ) from exc
        if not isinstance(table, pa.Table):
            raise TransformError(
                f"transform #{number} returned {type(table).__name__}, not a pyarrow.Table; "
                "return a table."
            )
    return table


def _source_for(pipeline: Pipeline) -> Source:
    """Tell a source that can read declared columns as raw text to do so."""
    reading_as_text = getattr(pipeline.source, "reading_as_text", None)
    contract = pipeline.record_contract
    if contract is not None and contract.columns and callable(reading_as_text):
        source: Source = reading_as_text(tuple(contract.columns))
        return source
    return pipeline.source


def _open_store(state: StateStore | str | None) -> StateStore | None:
    if state is None:
        return None
    from mendflow.state.store import StateStore

    return state if isinstance(state, StateStore) else StateStore(state)
