"""Order-independent hashes of a PostgreSQL destination, the PG twins of conftest's
``table_hash`` and ``dead_letter_hash``.

Rows are hashed as PostgreSQL's own text of each row, in a session whose time zone, date style
and float output are pinned, so two databases loaded with the same rows hash alike whatever the
server's or the client's settings.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

_PINNED = ("SET TimeZone = 'UTC'", "SET DateStyle = 'ISO, YMD'", "SET extra_float_digits = 1",
           "SET IntervalStyle = 'iso_8601'", "SET bytea_output = 'hex'")
_DEAD = "_mendflow_dead_letters"


def _hash(url: str, query: sql.Composable) -> tuple[int, str]:
    with psycopg.connect(url, autocommit=True) as con:
        for setting in _PINNED:
            con.execute(setting)
        row = con.execute(
            sql.SQL("SELECT count(*), coalesce(md5(string_agg(h, ',' ORDER BY h)), '') "
                    "FROM ({}) AS rows").format(query)
        ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def table_hash(url: str, table: str, *, schema: str = "public") -> tuple[int, str]:
    """(row count, order-independent hash of every row's content) of ``schema.table``."""
    return _hash(url, sql.SQL("SELECT md5(t::text) AS h FROM {} AS t").format(
        sql.Identifier(schema, table)))


def dead_letter_hash(url: str, *, schema: str = "public") -> tuple[int, str]:
    """Hash of the dead letters' content, without ids, run ids, attempts and times."""
    return _hash(url, sql.SQL(
        "SELECT md5(concat_ws('|', pipeline, batch_id, row_index, stage, reason, "
        "encode(record, 'hex'))) AS h FROM {}").format(sql.Identifier(schema, _DEAD)))
