"""A PostgreSQL server a test owns: its own data folder and TCP port, stopped and started at will.

Tests that take the database down (outage healing) must never touch the machine's shared server,
so they make one of these::

    with OwnedServer() as server:          # initdb + start, on a free port of 127.0.0.1
        url = server.database("orders")    # a libpq URL; the same across restarts
        server.stop(mode="immediate")      # as if the machine lost power
        server.start()                     # crash recovery, then up on the same port

The binaries are the machine's PostgreSQL (``pg_ctl`` on PATH or /usr/lib/postgresql/*/bin),
else the ones pgserver ships. PostgreSQL refuses to run as root, so as root every command runs
as an unprivileged OS user (``postgres`` when it exists, else pgserver's ``pgserver``). Local
connections are trusted, except roles in ``mf_password_auth`` (see ``add_password_role``), which
must give a scram-sha-256 password over TCP.

``pg_table_hash`` and ``pg_dead_letter_hash`` read a destination back as order-independent
hashes, to compare a run with a fault-free one.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

__all__ = ["OwnedServer", "pg_dead_letter_hash", "pg_table_hash"]

_HBA = """\
local all all trust
host all +mf_password_auth 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
"""


def pg_table_hash(url: str, table: str, schema: str = "public") -> tuple[int, str]:
    """(row count, order-independent hash of every row's content) of ``schema.table``."""
    query = sql.SQL(
        "SELECT count(*), coalesce(md5(string_agg(h, ',' ORDER BY h)), '') "
        "FROM (SELECT md5(t::text) AS h FROM {} t) rows"
    ).format(sql.Identifier(schema, table))
    return _hash(url, query)


def pg_dead_letter_hash(url: str, schema: str = "public") -> tuple[int, str]:
    """(count, hash) of the dead letters' content, without run ids, ids and times."""
    query = sql.SQL(
        "SELECT count(*), coalesce(md5(string_agg(h, ',' ORDER BY h)), '') FROM (SELECT "
        "md5(concat_ws('|', pipeline, batch_id, row_index, stage, reason, checks, "
        "encode(record, 'hex'), format, attempts)) AS h FROM {}) rows"
    ).format(sql.Identifier(schema, "_mendflow_dead_letters"))
    return _hash(url, query)


def _hash(url: str, query: sql.Composed) -> tuple[int, str]:
    with psycopg.connect(url) as con:
        row = con.execute(query).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def _bindir() -> Path:
    """Where pg_ctl and initdb are: the machine's PostgreSQL, else pgserver's bundled one."""
    found = shutil.which("pg_ctl")
    if found and (Path(found).resolve().parent / "initdb").exists():
        return Path(found).resolve().parent
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if installed:
        return installed[-1].parent
    from pgserver._commands import POSTGRES_BIN_PATH  # the dev extra's binaries

    return Path(POSTGRES_BIN_PATH)


def _run_as(bindir: Path) -> str | None:
    """The OS user to run PostgreSQL as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam("postgres").pw_name
    from pgserver.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists("pgserver")
    ensure_prefix_permissions(bindir)
    ensure_folder_permissions(bindir.parent, 0o555)
    return "pgserver"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OwnedServer:
    """A throwaway PostgreSQL cluster in a temporary folder, on 127.0.0.1:``port``."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.user = _run_as(self.bindir)
        self.root = Path(tempfile.mkdtemp(prefix="mf-pg-"))
        self.pgdata = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.running = False
        if self.user is not None:
            os.chown(self.root, pwd.getpwnam(self.user).pw_uid, pwd.getpwnam(self.user).pw_gid)
        self._initdb()

    @property
    def url(self) -> str:
        """The admin database's libpq URL (the ``postgres`` superuser, no password)."""
        return self.database("postgres")

    def database(self, name: str, *, user: str = "postgres", password: str = "") -> str:
        """A libpq URL for database ``name`` as ``user``; it stays valid across restarts."""
        url = f"host=127.0.0.1 port={self.port} dbname={name} user={user} connect_timeout=5"
        return f"{url} password={password}" if password else url

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its URL."""
        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.database(name)

    def add_password_role(self, name: str, password: str) -> None:
        """Create a login role that must authenticate with ``password`` (scram-sha-256)."""
        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE mf_password_auth")
                        .format(sql.Identifier(name), sql.Literal(password)))

    def start(self) -> None:
        """Start the server and wait until it accepts connections (after any crash recovery)."""
        self._pg(["pg_ctl", "-D", str(self.pgdata), "-l", str(self.log), "-w", "-t", "60",
                  "start"])
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (disconnect clients, clean shutdown), ``immediate``
        (abort at once; the next start recovers from the WAL) or ``smart``."""
        self._pg(["pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "stop"])
        self.running = False

    def close(self) -> None:
        """Stop the server if it runs and delete its folder."""
        if self.running:
            self.stop(mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> OwnedServer:
        self.start()
        try:
            with psycopg.connect(self.url, autocommit=True) as con:
                con.execute("CREATE ROLE mf_password_auth NOLOGIN")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _initdb(self) -> None:
        self._pg(["initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--no-sync"])
        (self.pgdata / "pg_hba.conf").write_text(_HBA, encoding="utf-8")
        settings = {
            "port": str(self.port), "listen_addresses": "'127.0.0.1'",
            # fsync off survives a crash of the server (not of the machine); an acknowledged
            # commit must survive it, so synchronous_commit stays on.
            "unix_socket_directories": f"'{self.root}'", "fsync": "off",
            "full_page_writes": "off", "max_connections": "40",
            "shared_buffers": "32MB", "password_encryption": "'scram-sha-256'",
        }
        with (self.pgdata / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _pg(self, argv: list[str]) -> None:
        """Run a PostgreSQL program (as the unprivileged user when we are root)."""
        argv = [str(self.bindir / argv[0]), *argv[1:]]
        # Output goes to a file, not a pipe: the server pg_ctl starts would hold a pipe open.
        with tempfile.TemporaryFile("w+") as out:
            done = subprocess.run(argv, user=self.user, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=out, timeout=120, check=False, cwd=self.root)
            out.seek(0)
            said = out.read().strip()
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(argv)} failed: {said}\n{log}")
