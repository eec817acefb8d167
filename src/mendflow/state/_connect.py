"""How the state store reaches its database: the URL forms it accepts, engine options, and
driver errors translated at the boundary.

Accepted forms (PostgreSQL always on the psycopg 3 driver: SQLAlchemy's default for
``postgresql://`` is psycopg2, which mendflow does not depend on):

- ``sqlite:///.mendflow/state.db``: a SQLite file (its folder is created);
- ``postgresql://user:pw@host:5432/db``, ``postgres://...``, ``postgresql+psycopg://...``;
- ``postgresql://`` or ``postgresql:///db``: libpq fills in the rest from ``PGHOST``, ``PGPORT``,
  ``PGUSER``, ``PGPASSWORD``, ``PGDATABASE`` (and ``~/.pgpass``);
- ``host=h user=u dbname=db``: a libpq key=value string (what psycopg takes), converted.

PostgreSQL engines ping a pooled connection before handing it out (``pool_pre_ping``), so
connections broken by a server restart or ``pg_terminate_backend`` are replaced instead of
failing the next statement. Passwords are masked in everything this module says (``display``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from mendflow._redact import MASK, redact
from mendflow.exceptions import ConfigError, TransientError

PG_DRIVER = "psycopg"
#: libpq waits forever for an unreachable host by default; a state store should say so sooner.
CONNECT_TIMEOUT_S = 10
_EXAMPLE = "use e.g. sqlite:///state.db or postgresql://user@host/db"


def state_url(url: str) -> URL:
    """``url`` (any accepted form, see above) as a SQLAlchemy URL with its driver chosen."""
    if "://" not in url and "=" in url:
        return _from_conninfo(url)
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ConfigError(
            f"state store URL {redact(url)!r} is not a database URL ({redact(str(exc))}); "
            + _EXAMPLE
        ) from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgres", "postgresql"):
        parsed = parsed.set(drivername=f"postgresql+{driver or PG_DRIVER}")
    return parsed


def display(url: URL) -> str:
    """``url`` as text with its password (in the userinfo or a query parameter) masked."""
    if "password" in url.query:
        url = url.update_query_dict({"password": MASK})
    return url.render_as_string(hide_password=True)


def scrubbed(value: Any) -> Any:
    """``value`` with any password masked in every string in it (through dicts and lists):
    what the store writes, such as a driver's error text quoting its connection string."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: scrubbed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrubbed(item) for item in value]
    return value


def make_engine(url: URL) -> Engine:
    """An engine for ``url``: SQLite with WAL and a busy timeout, PostgreSQL with pre-ping."""
    backend = url.get_backend_name()
    options: dict[str, Any] = {}
    if backend == "sqlite" and url.database:
        folder = os.path.dirname(url.database)
        if folder:
            os.makedirs(folder, exist_ok=True)
    if backend == "postgresql":
        options = {"pool_pre_ping": True, "connect_args": _pg_connect_args(url)}
    try:
        engine = sa.create_engine(url, **options)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise ConfigError(
            f"cannot use state store {display(url)}: {redact(str(exc), [url.password or ''])}; "
            + _EXAMPLE
        ) from exc
    if backend == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


@contextmanager
def translated(url: URL, *, what: str = "the state store") -> Iterator[None]:
    """Raise "cannot reach the database" driver errors as ``TransientError``, password masked.

    A refused login or a missing database also lands here: libpq reports them before any
    SQLSTATE exists, so they are retried like an outage and escalate when retrying gives up.
    """
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        where = display(url)
        reason = redact(str(exc.orig).strip(), [url.password or ""])
        raise TransientError(
            f"{what} {where} cannot be reached ({reason}); check that the database is up and "
            "that the URL (or the PG* variables) names the right host, user, password and "
            "database",
            dependency=where,
        ) from exc


def _from_conninfo(conninfo: str) -> URL:
    """A libpq ``key=value`` string as a ``postgresql+psycopg`` URL (every key kept)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    except ProgrammingError as exc:
        raise ConfigError(
            f"state store {redact(conninfo)!r} is neither a URL nor a libpq key=value "
            f"string ({redact(str(exc))}); " + _EXAMPLE
        ) from exc
    host = params.pop("host", None)
    port = params.pop("port", None)
    if host and ("," in host or host.startswith("/")):  # several hosts, or a socket folder
        params["host"] = host
        host = None
    if port and not port.isdigit():
        params["port"] = port
        port = None
    return URL.create(
        f"postgresql+{PG_DRIVER}", username=params.pop("user", None),
        password=params.pop("password", None), host=host, port=int(port) if port else None,
        database=params.pop("dbname", None), query=params,
    )


def _pg_connect_args(url: URL) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if "connect_timeout" not in url.query and not os.environ.get("PGCONNECT_TIMEOUT"):
        args["connect_timeout"] = CONNECT_TIMEOUT_S
    if "application_name" not in url.query and not os.environ.get("PGAPPNAME"):
        args["application_name"] = "mendflow-state"
    return args


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=10000")  # first: switching to WAL may wait for a lock
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@contextmanager
def write_transaction(engine: Engine, *, lock_key: int | None = None) -> Iterator[sa.Connection]:
    """A transaction that holds the store's write lock until it ends.

    SQLite: the file's single-writer lock, taken at once (``BEGIN IMMEDIATE``; the driver's own
    BEGIN is deferred). PostgreSQL: the transaction-scoped advisory lock ``lock_key``, when
    given. Other databases: a plain transaction.
    """
    if engine.dialect.name != "sqlite":
        with engine.begin() as con:
            if lock_key is not None and engine.dialect.name == "postgresql":
                con.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key)))
            yield con
        return
    with engine.connect() as con:
        con.execution_options(isolation_level="AUTOCOMMIT")
        con.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.exec_driver_sql("ROLLBACK")
            raise
        con.exec_driver_sql("COMMIT")
