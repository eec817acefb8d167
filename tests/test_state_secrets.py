"""The state store's URL forms on a real PostgreSQL (psycopg 3 whatever the spelling, libpq
variables), and its password kept out of errors, repr, stored records, the ledger and the CLI."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from mendflow.cli import main
from mendflow.events import RunFailed, RunStarted
from mendflow.exceptions import ConfigError, TransientError
from mendflow.remediation.diagnosis import Diagnosis, FailureClass
from mendflow.remediation.ledger import Ledger
from mendflow.state import StateStore
from mendflow.state._connect import make_engine, state_url
from mendflow.state.breakers import SqlBreakerStore
from tests.test_state_store import record_run

SECRET = "Zq9s3cret#pw"
LEAK = "s3cret"  # any part of the password that would show


@pytest.fixture
def secret_url(pg_url: str) -> Iterator[str]:
    """A URL of the test database for a new role whose password is SECRET (dropped after)."""
    role = f"mf_role_{uuid.uuid4().hex[:8]}"
    name = sql.Identifier(role)
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(name, sql.Literal(SECRET)))
        con.execute(sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(name))
    yield f"postgresql://{role}:{quote(SECRET, safe='')}@{_where(pg_url)}"
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute(sql.SQL("DROP OWNED BY {}").format(name))
        con.execute(sql.SQL("DROP ROLE {}").format(name))


def _where(pg_url: str) -> str:
    """``host:port/dbname`` of ``pg_url`` for a URL; a socket folder (pgserver's) as ``?host=``."""
    p = conninfo_to_dict(pg_url)
    host, port = str(p.get("host") or "127.0.0.1"), p.get("port") or 5432
    if host.startswith("/"):
        return f":{port}/{p['dbname']}?host={quote(host)}"
    return f"{host}:{port}/{p['dbname']}"


def _forms(pg_url: str) -> dict[str, str]:
    p = conninfo_to_dict(pg_url)
    user = p.get("user", "postgres")
    return {scheme: f"{scheme}://{user}@{_where(pg_url)}"
            for scheme in ("postgresql", "postgres", "postgresql+psycopg")} | {"libpq": pg_url}


@pytest.mark.parametrize("form", ["postgresql", "postgres", "postgresql+psycopg", "libpq"])
def test_postgres_urls_use_psycopg_3(form: str, pg_url: str) -> None:
    """postgresql://, postgres://, +psycopg and a libpq key=value string all open the store."""
    store = StateStore(_forms(pg_url)[form])
    assert store.engine.dialect.driver == "psycopg"
    record_run(store)
    assert [r["run_id"] for r in store.runs()] == ["r1"]
    store.close()


def test_libpq_variables_fill_in_a_bare_url(
    secret_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """postgresql:// with PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE set connects."""
    url = sa.engine.make_url(secret_url)
    host = url.host or url.query.get("host")  # a socket folder (pgserver) rides in the query
    for name, value in {"PGHOST": host, "PGPORT": url.port, "PGUSER": url.username,
                        "PGPASSWORD": url.password, "PGDATABASE": url.database}.items():
        monkeypatch.setenv(name, str(value))
    store = StateStore("postgresql://")
    with store.engine.connect() as con:
        assert con.exec_driver_sql("SELECT current_user").scalar() == url.username
    assert store.url == "postgresql+psycopg://"
    store.close()


def test_a_connection_killed_by_the_server_is_replaced(pg_url: str) -> None:
    """After pg_terminate_backend ends the store's pooled connections, the next call works."""
    store = StateStore(pg_url)
    record_run(store)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()
    assert killed is not None
    assert killed[0] >= 1
    assert [r["status"] for r in store.runs()] == ["succeeded"]
    record_run(store, "r2", at=2000.0)
    assert len(store.runs()) == 2
    store.close()


@pytest.mark.parametrize(
    "bad",
    [
        f"postgresql://u:{SECRET}@h:port/db",
        f"postgresql+nosuchdriver://u:{SECRET}@h/db",
        f"nosuchdb://u:{SECRET}@h/db",
        f"host=h password={SECRET} dbname",
    ],
    ids=["bad-port", "missing-driver", "unknown-database", "bad-libpq"],
)
def test_a_bad_url_is_a_config_error_without_its_password(bad: str) -> None:
    """A URL that cannot work says so (and what to use) without showing the password."""
    with pytest.raises(ConfigError, match="state store") as caught:
        StateStore(bad)
    assert LEAK not in str(caught.value)


def test_an_unreachable_store_is_transient_without_its_password() -> None:
    """No server on the port: a TransientError from the store and from its breakers, masked."""
    url = f"postgresql://u:{quote(SECRET, safe='')}@127.0.0.1:1/db?connect_timeout=2"
    with pytest.raises(TransientError, match="cannot be reached") as caught:
        StateStore(url)
    breakers = SqlBreakerStore(make_engine(state_url(url)))
    with pytest.raises(TransientError, match="breaker state store") as refused:
        breakers.load("orders-api")
    for exc in (caught.value, refused.value):
        assert LEAK not in str(exc)
        assert LEAK not in exc.dependency
        assert "***" in exc.dependency


def test_a_password_never_shows_in_the_store_its_records_or_the_cli(secret_url: str) -> None:
    """With a password-bearing URL: repr, url, stored errors, the ledger and CLI output mask it."""
    store = StateStore(secret_url)
    assert LEAK not in repr(store) + store.url
    assert "***" in store.url
    leaky = f"cannot connect to {secret_url} (password={SECRET})"
    record_run(store)
    store.record(RunStarted(run_id="r2", pipeline="orders", at=2000.0, write_mode="merge"))
    store.record(RunFailed(run_id="r2", pipeline="orders", at=2001.0, error=leaky,
                           error_type="DestinationUnavailable", retryable=True, duration_s=1.0))
    ledger = Ledger(store)
    diagnosis = Diagnosis(FailureClass.TRANSIENT, secret_url, "DestinationUnavailable", None, leaky)
    incident = ledger.open(pipeline="orders", run_id="r2", diagnosis=diagnosis, at=2001.0)
    ledger.act(incident.incident_id, action="retry", outcome="tried", detail=leaky, at=2001.0)
    assert ledger.current("orders", dependency=secret_url) == incident
    with store.engine.connect() as con:
        stored = [con.exec_driver_sql(f"SELECT * FROM {table}").all() for table in (
            "mf_events", "mf_runs", "mf_incidents", "mf_incident_actions")]
    assert "cannot connect to postgresql://" in str(stored)
    assert LEAK not in str(stored)
    store.close()
    runner = CliRunner()
    state = ["--state", secret_url]
    for args in (["status", *state], ["runs", *state], ["runs", "--json", *state],
                 ["incidents", *state], ["incidents", "--json", *state],
                 ["incidents", *state, "show", incident.incident_id[:8]]):
        done = runner.invoke(main, args)
        assert done.exit_code == 0, done.output
        assert LEAK not in done.output
    refused = runner.invoke(main, ["status", "--state", secret_url.replace(":5432/", ":1/")])
    assert refused.exit_code == 1
    assert "cannot be reached" in refused.output
    assert LEAK not in refused.output
