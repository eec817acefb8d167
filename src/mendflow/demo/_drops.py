"""The demo's CSV drop folder: store sales under a contract, with bad rows and a new column.

Three deterministic files: the first is clean; the second has a malformed amount, a negative
quantity, an unknown store, a duplicated sale id and a ragged line; the third adds a ``channel``
column mid-stream, which the ``evolve`` policy adds to the table inside the load transaction.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import duckdb
import yaml

from mendflow.checks import checks_from_spec
from mendflow.contracts.contract import Contract
from mendflow.pipeline import Pipeline
from mendflow.sinks.duckdb import DuckDBSink
from mendflow.sources.files import FileSource

DROPS = ("sales-2026-01-01.csv", "sales-2026-01-02.csv", "sales-2026-01-03.csv")
STORES = ["berlin", "lyon", "porto", "turin"]
CONTRACT = {
    "columns": {
        "sale_id": {"type": "bigint", "nullable": False},
        "store": {"type": "varchar", "in": STORES},
        "sku": {"type": "varchar", "regex": "^SKU-[0-9]{3}$"},
        "qty": {"type": "bigint", "min": 1, "max": 100},
        "amount": {"type": "double", "min": 0},
        "sold_at": {"type": "timestamp"},
    },
    "unique": ["sale_id"],
}
CHECKS = [
    {"check": "unique_key", "columns": ["sale_id"]},
    {"check": "null_rate", "column": "amount", "max_rate": 0.05},
    {"check": "volume", "z": 3.5, "min_history": 5, "severity": "warn"},
]


def drops_pipeline(drops: Path, db: Path) -> Pipeline:
    """Append the CSV drops to ``store_sales`` under the contract and checks above."""
    return Pipeline(
        name="store_drops",
        source=FileSource(drops / "*.csv", name="csv-drops"),
        destination=DuckDBSink(db, table="store_sales"),
        write_mode="append",
        contract=Contract.from_spec(CONTRACT, "demo contract"),
        checks=checks_from_spec(CHECKS, "demo checks"),
        schema="evolve",
    )


def write_pipeline_file(path: Path) -> None:
    """The drops pipeline as YAML, so ``mendflow dlq`` and ``mendflow schema`` can open it."""
    spec = {
        "name": "store_drops",
        "source": {"type": "files", "path": "drops/*.csv"},
        "destination": {"type": "duckdb", "path": "warehouse.duckdb", "table": "store_sales"},
        "write_mode": "append",
        "schema": "evolve",
        "contract": CONTRACT,
        "checks": CHECKS,
        "state": "sqlite:///state.db",
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")


def write_drops(folder: Path) -> None:
    """Write the three files (once: a second demo finds them and loads nothing new)."""
    folder.mkdir(exist_ok=True)
    write_pipeline_file(folder.parent / "store_drops.yaml")
    rng = random.Random(7)
    for day, name in enumerate(DROPS, 1):
        rows = [_sale(rng, day, i) for i in range(150)]
        if day == 2:
            rows[42]["amount"] = "n/a"
            rows[43]["qty"] = "-3"
            rows[44]["store"] = "paris"
            rows[45]["sale_id"] = rows[40]["sale_id"]
        if day == 3:
            for row in rows:
                row["channel"] = rng.choice(["web", "store"])
        path = folder / name
        if path.exists():
            continue
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows[:100])
            if day == 2:
                out.write("2999,berlin,SKU-123,2\r\n")  # a ragged line: two fields short
            writer.writerows(rows[100:])


def dead_letters_by_reason(db: Path) -> list[dict[str, Any]]:
    """The demo's dead letters: stage, reason and the record as it was written."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT stage, reason, CAST(record AS VARCHAR) FROM _mendflow_dead_letters "
            "WHERE pipeline = 'store_drops' ORDER BY id"
        ).fetchall()
    finally:
        con.close()
    return [{"stage": s, "reason": r, "record": rec} for s, r, rec in rows]


def schema_versions(db: Path) -> list[dict[str, Any]]:
    """Each version of ``store_sales``'s schema with what changed."""
    sink = DuckDBSink(db, table="store_sales")
    try:
        return [
            {"version": v.version, "changes": [c.as_dict() for c in v.changes]}
            for v in sink.schema_history()
        ]
    finally:
        sink.close()


def _sale(rng: random.Random, day: int, i: int) -> dict[str, Any]:
    return {
        "sale_id": day * 1000 + i,
        "store": rng.choice(STORES),
        "sku": f"SKU-{rng.randint(100, 999)}",
        "qty": rng.randint(1, 5),
        "amount": f"{rng.uniform(2, 300):.2f}",
        "sold_at": f"2026-01-{day:02d} {8 + i % 12:02d}:{i % 60:02d}:00",
    }
