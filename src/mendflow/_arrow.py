"""Arrow helpers shared by sources, sinks and checks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc


def rechunk(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Regroup a stream of record batches into tables of exactly ``rows`` rows (the last may be
    shorter). Slicing is zero-copy; only the boundaries are concatenated."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - held, batch.num_rows)
            pending.append(batch.slice(0, take))
            held += take
            batch = batch.slice(take)
            if held == rows:
                yield pa.Table.from_batches(pending)
                pending, held = [], 0
    if held:
        yield pa.Table.from_batches(pending)


def last_per_key(data: pa.Table, keys: Sequence[str]) -> pa.Table:
    """Keep the last row of each key, in order; the table itself when no key repeats."""
    if len(keys) == 1:
        unique = pc.count_distinct(data[keys[0]], mode="all").as_py()
    else:
        unique = data.select(list(keys)).group_by(list(keys)).aggregate([]).num_rows
    if unique == data.num_rows:
        return data
    indexed = data.append_column("__mf_i", pa.array(range(data.num_rows), pa.int64()))
    last = indexed.group_by(list(keys), use_threads=False).aggregate([("__mf_i", "max")])
    rows = last["__mf_i_max"].combine_chunks()
    return data.take(pc.take(rows, pc.sort_indices(rows)))


_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def newest_epoch(column: pa.ChunkedArray) -> float | str:
    """The column's newest value in epoch seconds, or why there is none."""
    kind = column.type
    try:
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            column = _parse_iso(column)
        elif pa.types.is_date(kind):
            column = column.cast(pa.timestamp("s"))
    except pa.ArrowInvalid as exc:
        return f"{column.type} values are not ISO 8601 timestamps ({exc}); declare the type."
    if not pa.types.is_timestamp(column.type):
        return f"the column is {kind}, not a timestamp; point the check at a timestamp column."
    newest = pc.max(column)
    if not newest.is_valid:
        return "every value is null: no timestamp to judge. Fix the source or the column name."
    unit = column.type.unit
    return float(newest.value) / _PER_SECOND[unit]


def _parse_iso(column: pa.ChunkedArray) -> pa.ChunkedArray:
    try:
        return pc.cast(column, pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid:
        return pc.cast(column, pa.timestamp("us"))
