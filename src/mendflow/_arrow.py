"""Arrow helpers shared by sources and sinks."""

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
