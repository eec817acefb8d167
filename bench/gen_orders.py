"""Generate a deterministic orders JSON-lines file for the benchmarks.

Columns: id, updated_at (ISO 8601), customer, amount, qty, region, note (nullable).
About 0.5 % of the rows carry one malformed value (a non-numeric amount or qty, or a
timestamp that is not a date). The same seed and row count always give the same bytes.

    python bench/gen_orders.py --rows 1000000 --out /tmp/orders_1m.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

REGIONS = ["north", "south", "east", "west", "central"]
BAD_AMOUNTS = ['"N/A"', '"12,50"', '"--"', '"1.2.3"']
BAD_QTY = ['"two"', '"?"', '"1e"']
BAD_TS = ['"2024-02-30T25:61:00Z"', '"yesterday"', '""']


def frame(rows: int, *, seed: int = 7, start_id: int = 1) -> pl.DataFrame:
    """Return one column `line` holding the JSON text of each generated order."""
    rng = np.random.default_rng(seed)
    ids = np.arange(start_id, start_id + rows, dtype=np.int64)
    base = np.datetime64("2024-01-01T00:00:00", "s")
    ts = (base + rng.integers(0, 365 * 86400, rows).astype("timedelta64[s]")).astype(str)
    amount = np.round(rng.uniform(1, 5000, rows), 2)
    qty = rng.integers(1, 50, rows)
    bad = rng.random(rows) < 0.005
    which = rng.integers(0, 3, rows)
    pick = rng.integers(0, 12, rows)
    note_null = rng.random(rows) < 0.3
    df = pl.DataFrame(
        {
            "id": ids,
            "ts": ts,
            "customer": rng.integers(1, 50_000, rows),
            "amount": amount,
            "qty": qty,
            "region": rng.integers(0, len(REGIONS), rows),
            "note_null": note_null,
            "bad": bad,
            "which": which,
            "pick": pick,
        }
    )
    return df.select(
        pl.concat_str(
            pl.lit('{"id":'),
            pl.col("id").cast(pl.String),
            pl.lit(',"updated_at":'),
            pl.when(pl.col("bad") & (pl.col("which") == 2))
            .then(pl.lit(pl.Series([BAD_TS])).list.get(pl.col("pick") % len(BAD_TS)))
            .otherwise(pl.lit('"') + pl.col("ts") + pl.lit('Z"')),
            pl.lit(',"customer":"C'),
            pl.col("customer").cast(pl.String),
            pl.lit('","amount":'),
            pl.when(pl.col("bad") & (pl.col("which") == 0))
            .then(pl.lit(pl.Series([BAD_AMOUNTS])).list.get(pl.col("pick") % len(BAD_AMOUNTS)))
            .otherwise(pl.col("amount").cast(pl.String)),
            pl.lit(',"qty":'),
            pl.when(pl.col("bad") & (pl.col("which") == 1))
            .then(pl.lit(pl.Series([BAD_QTY])).list.get(pl.col("pick") % len(BAD_QTY)))
            .otherwise(pl.col("qty").cast(pl.String)),
            pl.lit(',"region":"'),
            pl.col("region").replace_strict(
                list(range(len(REGIONS))), REGIONS, return_dtype=pl.String
            ),
            pl.lit('","note":'),
            pl.when(pl.col("note_null"))
            .then(pl.lit("null"))
            .otherwise(pl.lit('"gift wrap #') + pl.col("pick").cast(pl.String) + pl.lit('"')),
            pl.lit("}"),
        ).alias("line")
    )


def write(path: Path, rows: int, *, seed: int = 7, chunk: int = 1_000_000) -> None:
    """Write `rows` orders to `path`, a chunk at a time so memory stays flat."""
    with path.open("w", encoding="utf-8") as out:
        for i, start in enumerate(range(0, rows, chunk)):
            n = min(chunk, rows - start)
            lines = frame(n, seed=seed + i, start_id=start + 1)["line"]
            out.write("\n".join(lines.to_list()))
            out.write("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    write(args.out, args.rows, seed=args.seed)


if __name__ == "__main__":
    main()
