"""The destinations a chaos run loads into: a fresh one per seed, and what each holds.

DuckDB: a file of its own in the seed's folder. PostgreSQL: the pipeline's database, a schema
of its own per seed (``<schema>_chaos_<label>``, dropped before use; the bookkeeping tables live
beside the table, so the checkpoint is fresh too). ``Digest`` is what the checker compares: an
order-independent hash of the rows over the reference's columns (rows whose key a corruption
touched left out), the keys, and a digest of each dead letter's bytes. Identifiers are quoted,
values bound.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mendflow._config_sinks import destination as build_sink
from mendflow._sql import ident
from mendflow.chaos.source import NEW_COLUMN, digest
from mendflow.exceptions import ConfigError

__all__ = ["Digest", "Target"]

_DEAD = "_mendflow_dead_letters"
_PG_PINNED = ("SET TimeZone = 'UTC'", "SET DateStyle = 'ISO, YMD'", "SET extra_float_digits = 1",
              "SET IntervalStyle = 'iso_8601'", "SET bytea_output = 'hex'")


@dataclass(frozen=True, slots=True)
class Digest:
    """What a destination holds, for comparison."""

    columns: tuple[str, ...]
    rows: int
    content: str
    keys: frozenset[str]
    dead: Counter[str]
    new_column: int


@dataclass(frozen=True, slots=True)
class Target:
    """The pipeline's ``destination:`` mapping, and the folder its relative paths start at."""

    spec: Mapping[str, Any]
    base: Path
    pipeline: str

    def __post_init__(self) -> None:
        if self.kind not in ("duckdb", "postgres"):
            raise ConfigError(
                f"mendflow chaos runs against duckdb and postgres destinations, not "
                f"{self.kind!r}; point a copy of the pipeline at one of those."
            )

    @property
    def kind(self) -> str:
        """``duckdb`` or ``postgres``."""
        return str(self.spec.get("type"))

    def fresh(self, folder: Path, label: str) -> dict[str, Any]:
        """The destination mapping of a fresh, empty destination for ``label``."""
        if self.kind == "duckdb":
            return {**self.spec, "path": str(folder / "dest.duckdb")}
        schema = f"{self.spec.get('schema', 'public')}_chaos_{label}"[:63]
        fresh = {**self.spec, "schema": schema}
        self.drop(fresh)
        return fresh

    def drop(self, spec: Mapping[str, Any]) -> None:
        """Remove a destination made by ``fresh`` (a DuckDB file goes with its folder)."""
        if self.kind == "duckdb":
            Path(spec["path"]).unlink(missing_ok=True)
            return
        from psycopg import sql

        with self._pg(spec) as con:
            con.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(spec["schema"])))

    def digest(
        self, spec: Mapping[str, Any], *, key: Sequence[str], columns: Sequence[str] = (),
        excluded: Sequence[str] = (),
    ) -> Digest:
        """What the destination ``spec`` holds: over ``columns`` (default: its own), rows whose
        key is in ``excluded`` left out of the content hash."""
        if self.kind == "duckdb":
            return self._duck_digest(spec, key, columns, excluded)
        return self._pg_digest(spec, key, columns, excluded)

    def _duck_digest(
        self, spec: Mapping[str, Any], key: Sequence[str], columns: Sequence[str],
        excluded: Sequence[str],
    ) -> Digest:
        import duckdb

        table, own = ident(spec["table"]), tuple(columns)
        con = duckdb.connect(spec["path"], read_only=True)
        try:
            found = tuple(r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                "AND table_schema = 'main' ORDER BY ordinal_position", [spec["table"]]
            ).fetchall())
            own = own or found
            keys = _key_sql(key)
            row = con.execute(
                f"SELECT count(*), coalesce(md5(string_agg(h, ',' ORDER BY h)), '') FROM "
                f"(SELECT md5(CAST(s AS VARCHAR)) AS h FROM (SELECT "
                f"{', '.join(map(ident, own))} FROM {table} "
                f"WHERE NOT list_contains(CAST(? AS VARCHAR[]), {keys})) s)",
                [list(excluded)],
            ).fetchone()
            present = {str(k) for (k,) in con.execute(
                f"SELECT DISTINCT {keys} FROM {table}").fetchall()}
            dead = Counter(digest(bytes(r)) for (r,) in con.execute(
                f"SELECT record FROM {_DEAD} WHERE pipeline = ?", [self.pipeline]).fetchall())
            extra = -1
            if NEW_COLUMN in found:
                counted = con.execute(
                    f"SELECT count({ident(NEW_COLUMN)}) FROM {table}").fetchone()
                extra = int(counted[0]) if counted else 0
        finally:
            con.close()
        assert row is not None
        return Digest(own, int(row[0]), str(row[1]), frozenset(present), dead, extra)

    def _pg_digest(
        self, spec: Mapping[str, Any], key: Sequence[str], columns: Sequence[str],
        excluded: Sequence[str],
    ) -> Digest:
        from psycopg import sql

        schema, name = spec.get("schema", "public"), spec["table"]
        table = sql.Identifier(schema, name)
        with self._pg(spec) as con:
            found = tuple(r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = %s ORDER BY ordinal_position", [schema, name]).fetchall())
            own = tuple(columns) or found
            _key_sql(key)  # says what to do when there is no key
            keys = sql.SQL("concat_ws('|', {})").format(sql.SQL(", ").join(
                sql.SQL("{}::text").format(sql.Identifier(k)) for k in key))
            row = con.execute(sql.SQL(
                "SELECT count(*), coalesce(md5(string_agg(h, ',' ORDER BY h)), '') FROM "
                "(SELECT md5(s::text) AS h FROM (SELECT {} FROM {} WHERE NOT ({} = ANY(%s))) s) "
                "AS rows").format(sql.SQL(", ").join(map(sql.Identifier, own)), table, keys),
                [list(excluded)]).fetchone()
            present = {str(k) for (k,) in con.execute(
                sql.SQL("SELECT DISTINCT {} FROM {}").format(keys, table)).fetchall()}
            dead = Counter(digest(bytes(r)) for (r,) in con.execute(
                sql.SQL("SELECT record FROM {} WHERE pipeline = %s").format(
                    sql.Identifier(schema, _DEAD)), [self.pipeline]).fetchall())
            extra = -1
            if NEW_COLUMN in found:
                counted = con.execute(sql.SQL("SELECT count({}) FROM {}").format(
                    sql.Identifier(NEW_COLUMN), table)).fetchone()
                extra = int(counted[0]) if counted else 0
        assert row is not None
        return Digest(own, int(row[0]), str(row[1]), frozenset(present), dead, extra)

    def _pg(self, spec: Mapping[str, Any]) -> Any:
        import psycopg

        sink = build_sink(dict(spec), self.base, "chaos destination")
        con = psycopg.connect(str(getattr(sink, "url", "")), autocommit=True)
        for setting in _PG_PINNED:
            con.execute(setting)
        return con


def _key_sql(key: Sequence[str]) -> str:
    """The key as text in DuckDB SQL, columns joined by ``|`` (``source._key_text`` in Python)."""
    if not key:
        raise ConfigError("mendflow chaos needs a key to compare by: set primary_key or --key.")
    return "concat_ws('|', " + ", ".join(f"CAST({ident(k)} AS VARCHAR)" for k in key) + ")"


def remove_folder(folder: Path) -> None:
    """Remove a seed's folder and everything in it (before a fresh start)."""
    shutil.rmtree(folder, ignore_errors=True)
