"""PostgreSQL for tests: ``$MENDFLOW_TEST_PG_URL`` when set, else a throwaway pgserver instance.

Each test that asks for ``pg_url`` gets a database of its own (created, then dropped with
``FORCE``), so tests never see each other's tables. With ``MENDFLOW_REQUIRE_SERVICES=1`` (CI) a
server that cannot be reached fails the test; otherwise it is skipped.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from functools import cache

import psycopg
import pytest
from psycopg import sql

ENV = "MENDFLOW_TEST_PG_URL"


def _unavailable(why: str) -> None:
    if os.environ.get("MENDFLOW_REQUIRE_SERVICES") == "1":
        pytest.fail(f"PostgreSQL is required (MENDFLOW_REQUIRE_SERVICES=1) but {why}")
    pytest.skip(f"no PostgreSQL: {why}")


@cache
def _admin_url() -> str:
    url = os.environ.get(ENV)
    if url:
        return url
    import pgserver  # the dev extra's throwaway server, for laptops without PostgreSQL

    folder = tempfile.mkdtemp(prefix="mendflow-pgserver-")
    server = pgserver.get_server(folder, cleanup_mode="delete")  # type: ignore[attr-defined]
    atexit.register(server.cleanup)
    return str(server.get_uri())


def admin_url() -> str:
    """A URL of the test server's admin database (may skip or fail the test, see above)."""
    try:
        url = _admin_url()
        with psycopg.connect(url, connect_timeout=5) as con:
            con.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001  any failure means: no server for this test
        _unavailable(f"{os.environ.get(ENV) or 'pgserver'} did not answer: {exc}")
    return url


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    params["dbname"] = name
    return make_conninfo("", **params)


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """Create an empty database, yield a URL (libpq key=value form) for it, drop it after."""
    admin = admin_url()
    name = f"mf_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(admin, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as con:
            con.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def sqlalchemy_url(conninfo: str) -> str:
    """A libpq connection string as a SQLAlchemy URL for the psycopg 3 driver."""
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import URL

    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    host = str(params.pop("host", "") or "") or None
    port = params.pop("port", None)
    query = {k: str(v) for k, v in params.items() if k not in {"dbname", "user", "password"}}
    if host and host.startswith("/"):
        query["host"] = host
        host = None
    return URL.create(
        "postgresql+psycopg", username=params.get("user"), password=params.get("password"),
        host=host, port=int(port) if port else None, database=params.get("dbname"),
        query=query,
    ).render_as_string(hide_password=False)
