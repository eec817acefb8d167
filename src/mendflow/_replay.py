"""Replaying dead letters through a pipeline's current contract, transforms and destination.

A chunk of dead letters becomes one batch: ``json`` records are parsed the way the file source
parses a JSON-lines file (types detected over the whole chunk, declared columns read as text),
records that are not a JSON object fail again at stage ``parse``, and ``csv``/``bytes`` records
are skipped (they cannot be parsed without their file: export, fix and drop the file again).
The batch goes through the runner's own preparation, then out as one ``Load`` with no position
and ``replay_ids``: the dead-letter id of each record, laid out loaded-first. The sink settles
the store in the load's transaction (see ``sinks/_duckdb_dlq``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from mendflow import _engine
from mendflow._runner import _prepare
from mendflow.batch import DEAD_LETTER_SCHEMA, Batch, Load, no_dead_letters
from mendflow.clock import Clock
from mendflow.deadletter import DeadLetter, DeadLetterStore, Filter, ReplayResult, store_for
from mendflow.events import Hooks, RecordsReplayed, RunContext, bind_run, unbind_run
from mendflow.exceptions import CheckFailed, ConfigError, SchemaMismatch
from mendflow.pipeline import Pipeline
from mendflow.typing import Hook

_RECORDS = "__mf_replay"


@dataclass(slots=True)
class _Tally:
    loaded: int = 0
    failed: int = 0
    skipped: int = 0
    blocked: list[str] = dataclasses.field(default_factory=list)


def run_replay(
    pipeline: Pipeline,
    *,
    where: Filter,
    force: bool,
    hooks: Iterable[Hook],
    clock: Clock,
    chunk: int,
) -> ReplayResult:
    """See ``mendflow.deadletter.replay``."""
    if pipeline.write_mode == "replace":
        raise ConfigError(
            f"pipeline {pipeline.name!r} replaces its table on every run, so a replay has no "
            "table to add to; fix the records at the source and run it again."
        )
    if chunk < 1:
        raise ConfigError(f"chunk must be at least 1, not {chunk}.")
    store = store_for(pipeline.destination)
    where = dataclasses.replace(where, pipeline=pipeline.name)
    context = RunContext(uuid.uuid4().hex, pipeline.name, Hooks(hooks), clock.now)
    token = bind_run(context)
    try:
        poison = 0 if force else store.count(
            dataclasses.replace(where, limit=None), min_attempts=pipeline.max_replays
        )
        tally = _replay_all(pipeline, store, where, force=force, chunk=chunk, run_id=context.run_id)
        context.hooks.emit(
            RecordsReplayed(
                run_id=context.run_id, pipeline=pipeline.name, at=clock.now(),
                loaded=tally.loaded, failed=tally.failed, skipped=tally.skipped + poison,
            )
        )
    finally:
        unbind_run(token)
        pipeline.destination.close()
    return ReplayResult(
        loaded=tally.loaded, failed=tally.failed, skipped=tally.skipped, poison=poison,
        blocked=tuple(tally.blocked),
    )


def _replay_all(
    pipeline: Pipeline, store: DeadLetterStore, where: Filter, *, force: bool, chunk: int,
    run_id: str,
) -> _Tally:
    """Replay chunk after chunk; count what each left in the store (failed) or took out."""
    tally = _Tally()
    cap = None if force else pipeline.max_replays
    for letters in store.pending(where, max_attempts=cap, size=chunk):
        ids = _replay_chunk(pipeline, run_id, letters, tally)
        if ids:
            left = store.count(Filter(pipeline=pipeline.name, ids=ids), min_attempts=0)
            tally.failed += left
            tally.loaded += len(ids) - left
    return tally


def _replay_chunk(
    pipeline: Pipeline, run_id: str, letters: Sequence[DeadLetter], tally: _Tally
) -> tuple[int, ...]:
    """Replay one chunk as one load; return the ids replayed (those still stored failed)."""
    replayable = [letter for letter in letters if letter.format == "json"]
    tally.skipped += len(letters) - len(replayable)
    if not replayable:
        return ()
    ids = pa.array([letter.id for letter in replayable], pa.int64())
    records = pa.array([letter.record for letter in replayable], pa.binary())
    batch_id = _batch_id(replayable)
    parsed, unparsed = _parse(records, text=_text_columns(pipeline))
    batch = Batch(
        id=batch_id, data=parsed.data, position={}, source="dead letters",
        raw=records.take(parsed.rows),
    )
    rows, dead, dropped = pa.table({}), no_dead_letters(), 0
    if batch.data.num_rows:
        [prepared] = list(_prepare(pipeline, iter([batch]), {}))
        rows, dead, dropped = prepared.rows, prepared.dead_letters, prepared.dropped
    layout = _layout(ids, parsed.rows, dead, unparsed)
    load = Load(
        pipeline=pipeline.name, run_id=run_id, batch_id=batch_id, data=rows,
        position=None, dead_letters=layout.dead_letters, mode=pipeline.write_mode,
        primary_key=tuple(pipeline.primary_key), records=len(replayable) - dropped,
        schema=pipeline.schema, checks=tuple(pipeline.checks), replay_ids=layout.replay_ids,
    )
    done = tuple(letter.id for letter in replayable)
    try:
        pipeline.destination.write(load)
    except CheckFailed as exc:  # rolled back whole: each record stays, one attempt more
        store_for(pipeline.destination).tried(done)
        tally.blocked.append(str(exc))
    return done


def _batch_id(letters: Sequence[DeadLetter]) -> str:
    """Derived from the ids and attempts replayed: the same chunk tried again has the same id,
    and a chunk is never the same once its load committed (loaded ones are gone, others moved)."""
    digest = hashlib.sha256(json.dumps([[x.id, x.attempts] for x in letters]).encode())
    return f"replay:{digest.hexdigest()[:24]}"


def _text_columns(pipeline: Pipeline) -> frozenset[str]:
    """Columns a run reads as raw text: the declared ones and those of the contract."""
    contract: Any = getattr(pipeline.contract, "columns", None) or {}
    names = set(pipeline.columns)
    names.update(contract if isinstance(contract, Mapping) else ())
    return frozenset(str(name) for name in names)


@dataclass(frozen=True, slots=True)
class _Parsed:
    """Rows parsed, and for each its index among the chunk's records."""

    data: pa.Table
    rows: pa.Array


def _parse(records: pa.Array, *, text: frozenset[str]) -> tuple[_Parsed, pa.Table]:
    """Parse the JSON-object records as one JSON-lines file; return them and dead letters (stage
    parse, ``row_index`` = the record's index in the chunk) for the records that are not one."""
    con = _engine.cursor()
    try:
        con.register(_RECORDS, pa.table({"record": records}))
        checked = con.sql(
            "SELECT (row_number() OVER () - 1)::BIGINT AS i, CASE WHEN s IS NULL THEN "
            "'not UTF-8 text' WHEN NOT json_valid(s) THEN 'not valid JSON' WHEN json_type(s) <> "
            "'OBJECT' THEN 'not a JSON object' END AS why, CASE WHEN why IS NULL THEN "
            f"CAST(json(s) AS VARCHAR) END AS line FROM (SELECT try(decode(record)) AS s FROM "
            f"{_RECORDS})"
        ).to_arrow_table()
        good = pc.is_null(checked["why"])
        rows = pc.filter(checked["i"], good).combine_chunks()
        lines = pc.filter(checked["line"], good)
        data = _read_lines(con, lines, text) if len(rows) else pa.table({})
        bad = checked.filter(pc.invert(good))
    finally:
        con.close()
    return _Parsed(data, rows), _parse_failures(bad["i"], bad["why"])


def _read_lines(con: duckdb.DuckDBPyConnection, lines: pa.ChunkedArray, text: frozenset[str]
                ) -> pa.Table:
    """Read JSON lines like the file source: detected types, ``text`` columns as VARCHAR."""
    joined = "\n".join(lines.to_pylist()) + "\n"
    with tempfile.TemporaryDirectory(prefix="mendflow-replay-") as folder:
        path = os.path.join(folder, "records.jsonl")
        with open(path, "w", encoding="utf-8") as out:
            out.write(joined)
        source = "read_json($path, format = 'newline_delimited', sample_size = -1"
        try:
            found = con.sql(f"DESCRIBE SELECT * FROM {source})", params={"path": path})
            types = {row[0]: row[1] for row in found.fetchall()}
            columns = types | {c: "VARCHAR" for c in types if c in text}
            return con.sql(
                f"SELECT * FROM {source}, columns = $columns)",
                params={"path": path, "columns": columns},
            ).to_arrow_table()
        except duckdb.Error as exc:
            raise SchemaMismatch(
                f"the dead letters to replay do not read as one JSON-lines batch ({exc}); "
                "replay fewer at a time (--limit, --check) or export and fix them.",
                dependency="dead letters",
            ) from exc


def _parse_failures(rows: pa.ChunkedArray, why: pa.ChunkedArray) -> pa.Table:
    n = len(rows)
    checks = pc.binary_join_element_wise(
        '[{"check": "parse", "column": null, "message": "', why, '"}]', ""
    )
    return pa.table(
        [rows.cast(pa.int64()), pa.array(["parse"] * n, pa.string()), why.cast(pa.string()),
         checks.cast(pa.string()), pa.nulls(n, pa.binary()), pa.array(["json"] * n, pa.string())],
        schema=DEAD_LETTER_SCHEMA,
    )


@dataclass(frozen=True, slots=True)
class _Layout:
    """The load's record order (loaded first, then the failed), as dead-letter ids, and the
    dead letters with ``row_index`` pointing into it."""

    replay_ids: tuple[int, ...]
    dead_letters: pa.Table


def _layout(ids: pa.Array, rows: pa.Array, dead: pa.Table, unparsed: pa.Table) -> _Layout:
    """Lay the chunk's records out loaded-first and point every dead letter at its record.

    ``rows`` maps each parsed row to its record; ``dead`` (from preparation) points at parsed
    rows; ``unparsed`` points at records.
    """
    failed_rows = pc.unique(dead["row_index"].combine_chunks()).sort()
    failing = pc.is_in(pa.array(range(len(rows)), pa.int64()), value_set=failed_rows)
    loaded = ids.take(pc.filter(rows, pc.invert(failing)))
    again = ids.take(rows.take(failed_rows))
    never = ids.take(unparsed["row_index"].combine_chunks())
    order = pa.concat_arrays([loaded, again, never])
    start = len(loaded)
    moved = pc.add(pc.index_in(dead["row_index"].combine_chunks(), value_set=failed_rows), start)
    dead = dead.set_column(0, "row_index", moved.cast(pa.int64()))
    at = pa.array(range(start + len(again), len(order)), pa.int64())
    unparsed = unparsed.set_column(0, "row_index", at)
    letters = pa.concat_tables([dead.cast(DEAD_LETTER_SCHEMA), unparsed])
    return _Layout(tuple(order.to_pylist()), letters)
