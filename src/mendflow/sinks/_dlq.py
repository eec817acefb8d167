"""The dead-letter store's dialect-free part: its queries, the replay's settlement, the store.

Every destination keeps ``_mendflow_dead_letters`` with the same columns and the same meaning
(see ``_duckdb_dlq`` for the semantics). The statements here are templates: ``{table}`` is the
store's table, ``{dead}`` and ``{ids}`` the load's dead letters and a replay's ids as the
destination holds them for the transaction, ``{p}`` a bound value. Each destination renders
them with its own quoting and placeholder (DuckDB ``?``, psycopg ``%s``) and gives the one
condition the two dialects spell differently: a failed check's name in the ``checks`` JSON.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import IO, Any

import pyarrow as pa

from mendflow.batch import Load
from mendflow.deadletter import DeadLetter, Filter, parse_checks

__all__ = ["DELETE_LOADED", "INSERT", "TABLE", "UPDATE_FAILED", "SqlDeadLetters", "settlement"]

TABLE = "_mendflow_dead_letters"

#: The load's dead letters in, attempt 1; values: pipeline, run_id, batch_id.
INSERT = (
    "INSERT INTO {table} (pipeline, run_id, batch_id, row_index, stage, reason, checks, record, "
    "format, attempts, first_seen, last_seen) SELECT {p}, {p}, {p}, row_index, stage, reason, "
    "checks, record, format, 1, now(), now() FROM {dead}"
)
#: A replay's records that failed again: one more attempt, the new reasons; value: pipeline.
UPDATE_FAILED = (
    "UPDATE {table} AS d SET attempts = d.attempts + 1, last_seen = now(), stage = f.stage, "
    "reason = f.reason, checks = f.checks FROM (SELECT DISTINCT ON (x.row_index) i.id, "
    "x.stage, x.reason, x.checks FROM {dead} x JOIN {ids} i ON i.pos = x.row_index "
    "ORDER BY x.row_index) f WHERE d.id = f.id AND d.pipeline = {p}"
)
#: A replay's other records, in the table now; value: pipeline.
DELETE_LOADED = (
    "DELETE FROM {table} WHERE pipeline = {p} AND id IN (SELECT id FROM {ids} "
    "WHERE pos NOT IN (SELECT row_index FROM {dead}))"
)


def settlement(load: Load, dead: pa.Table) -> tuple[pa.Table, pa.Table, pa.Table]:
    """A replay's dead letters split into (new ones to ``INSERT``, the replayed records that
    failed again, the ids by position ``pos``) for ``UPDATE_FAILED`` and ``DELETE_LOADED``.

    Dead letters the sink added itself (a drift policy setting rows aside) point at rows of
    ``load.data``; the replay lays its records out loaded-first, so those indexes are the
    records' own when the transforms kept one row per record. When they did not, such rows go
    in as new dead letters rather than be matched to the wrong record.
    """
    ids = pa.table({"pos": pa.array(range(len(load.replay_ids)), pa.int64()),
                    "id": pa.array(load.replay_ids, pa.int64())})
    own = load.dead_letters.num_rows
    extra = dead.slice(own)
    if extra.num_rows and load.data.num_rows != len(load.replay_ids) - own:
        return extra, dead.slice(0, own), ids
    return dead.slice(0, 0), dead, ids


_SELECT = (
    "SELECT id, pipeline, run_id, batch_id, row_index, stage, reason, checks, record, format, "
    "attempts, extract(epoch FROM first_seen), extract(epoch FROM last_seen) FROM {table}"
)


class SqlDeadLetters(ABC):
    """A ``DeadLetterStore`` over one destination's ``_fetch``; ``CHECK`` is its condition
    "a failed check is named {p}"."""

    CHECK: str

    @abstractmethod
    def _fetch(self, template: str, params: Sequence[Any], doing: str
               ) -> builtins.list[tuple[Any, ...]]:
        """Render ``template``, run it in a transaction of its own, return its rows (if any);
        a driver error is translated, naming ``doing``."""

    def list(self, where: Filter | None = None) -> builtins.list[DeadLetter]:
        """The dead letters selected (None: all), oldest id first."""
        sql, params = self._where(where or Filter())
        rows = self._fetch(f"{_SELECT} WHERE {sql} ORDER BY id", params, "listing dead letters")
        return [_letter(row) for row in rows]

    def get(self, id: int) -> DeadLetter | None:
        """One dead letter, or None."""
        found = self.list(Filter(ids=(id,)))
        return found[0] if found else None

    def purge(self, where: Filter) -> int:
        """Delete the dead letters selected; return how many."""
        sql, params = self._where(where)
        query = f"DELETE FROM {{table}} WHERE {sql} RETURNING id"
        return len(self._fetch(query, params, "purging dead letters"))

    def tried(self, ids: Sequence[int]) -> None:
        """Count one more attempt for ``ids`` (a replay of theirs was rolled back)."""
        self._fetch(
            "UPDATE {table} SET attempts = attempts + 1, last_seen = now() "
            "WHERE id = ANY(CAST({p} AS BIGINT[])) RETURNING id",
            [list(ids)], "counting a replay attempt")

    def export(self, where: Filter, out: IO[str]) -> int:
        """Write the dead letters selected to ``out`` as JSON lines; return how many."""
        count = 0
        for chunk in self.pending(where, max_attempts=None, size=10_000):  # bounded memory
            out.writelines(json.dumps(x.as_dict(), ensure_ascii=False) + "\n" for x in chunk)
            count += len(chunk)
        return count

    def pending(
        self, where: Filter, *, max_attempts: int | None, size: int
    ) -> Iterator[builtins.list[DeadLetter]]:
        """Chunks of at most ``size`` with fewer than ``max_attempts`` attempts, by id."""
        after, left = -1, where.limit
        sql, base = self._where(dataclasses.replace(where, limit=None))
        if max_attempts is not None:
            sql, base = f"{sql} AND attempts < {{p}}", [*base, max_attempts]
        query = f"{_SELECT} WHERE {sql} AND id > {{p}} ORDER BY id LIMIT {{p}}"
        while left is None or left > 0:
            params = [*base, after, size if left is None else min(size, left)]
            rows = self._fetch(query, params, "reading dead letters to replay")
            if not rows:
                return
            chunk = [_letter(row) for row in rows]
            yield chunk
            after = chunk[-1].id
            left = None if left is None else left - len(chunk)

    def count(self, where: Filter, *, min_attempts: int) -> int:
        """How many selected dead letters have at least ``min_attempts`` attempts."""
        sql, params = self._where(where)
        rows = self._fetch(f"SELECT count(*) FROM {{table}} WHERE {sql} AND attempts >= {{p}}",
                           [*params, min_attempts], "counting dead letters")
        return int(rows[0][0]) if rows else 0

    def _where(self, where: Filter) -> tuple[str, builtins.list[Any]]:
        """The condition (a template) for ``where`` and its bound values."""
        terms: builtins.list[str] = []
        params: builtins.list[Any] = []
        for sql, value in (
            ("pipeline = {p}", where.pipeline),
            ("stage = {p}", where.stage),
            (self.CHECK, where.check),
            ("last_seen >= to_timestamp(CAST({p} AS DOUBLE PRECISION))", where.since),
            ("last_seen < to_timestamp(CAST({p} AS DOUBLE PRECISION))", where.until),
        ):
            if value is not None:
                terms.append(sql)
                params.append(value)
        if where.ids:
            terms.append("id = ANY(CAST({p} AS BIGINT[]))")
            params.append(list(where.ids))
        condition = " AND ".join(terms) or "true"
        if where.limit is not None:
            condition = (
                f"id IN (SELECT id FROM {{table}} WHERE {condition} ORDER BY id LIMIT {{p}})"
            )
            params.append(where.limit)
        return condition, params


def _letter(row: tuple[Any, ...]) -> DeadLetter:
    return DeadLetter(
        id=int(row[0]), pipeline=row[1], run_id=row[2], batch_id=row[3], row_index=int(row[4]),
        stage=row[5], reason=row[6], checks=parse_checks(row[7]), record=bytes(row[8] or b""),
        format=row[9], attempts=int(row[10]), first_seen=float(row[11]),
        last_seen=float(row[12]),
    )
