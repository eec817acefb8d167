"""PostgreSQL errors, produced for real, translate to the class healing needs: transient ones are
retried, a missing privilege or refused credentials escalate, and no password leaks."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, LiteralString

import psycopg
import psycopg.errors
import pytest

from mendflow import FileSource, Pipeline, Retry, StateStore
from mendflow.events import BatchRead, BatchStaged, Event, RetryScheduled
from mendflow.exceptions import (
    BadData,
    DestinationError,
    DestinationUnavailable,
    MendflowError,
    ResourceExhausted,
    SchemaMismatch,
)
from mendflow.remediation import Action, Ledger, Situation, decide, diagnose
from mendflow.remediation.escalation import WebhookNotifier
from mendflow.remediation.playbook import DEFAULT_PLAYBOOK
from mendflow.remediation.supervisor import run_healing
from mendflow.sinks._pg_errors import ERRORS, translate
from mendflow.sinks.postgres import PostgresSink
from mendflow.testing import EventLog, FakeClock
from tests._pg import fresh_database
from tests._pg_cluster import OwnedServer, pg_table_hash
from tests.conftest import WebhookReceiver

SECRET = "Tr0ub4dor-s3cret"


@pytest.fixture(scope="module")
def owned() -> Iterator[OwnedServer]:
    """A server of this module's own, for roles, passwords and shutdowns."""
    with OwnedServer() as server:
        server.add_password_role("loader", SECRET)
        server.create_database("errors")
        yield server


def _raised(call: Callable[[], object]) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as info:
        call()
    return info.value


def _translated(exc: psycopg.Error, url: str = "") -> MendflowError:
    return translate(exc, f"loading into {url or 'orders'}", dependency="postgres:test",
                     secrets=[SECRET])


def _action(error: MendflowError) -> Action:
    return decide(DEFAULT_PLAYBOOK, Situation(diagnose(error), 0, batch_id="b1", stage="write",
                                              batch_size=10_000))


@pytest.mark.parametrize(
    ("sqlstate", "kind", "action"),
    [
        ("08006", DestinationUnavailable, Action.ROLLBACK),
        ("57P01", DestinationUnavailable, Action.ROLLBACK),
        ("57P03", DestinationUnavailable, Action.ROLLBACK),
        ("57014", DestinationUnavailable, Action.ROLLBACK),
        ("40001", DestinationUnavailable, Action.ROLLBACK),
        ("40P01", DestinationUnavailable, Action.ROLLBACK),
        ("55P03", DestinationUnavailable, Action.ROLLBACK),
        ("53300", DestinationUnavailable, Action.ROLLBACK),
        ("53200", ResourceExhausted, Action.SHRINK_BATCH),
        ("53100", ResourceExhausted, Action.SHRINK_BATCH),
        ("42501", DestinationError, Action.ESCALATE),
        ("28P01", DestinationError, Action.ESCALATE),
        ("3D000", DestinationError, Action.ESCALATE),
        ("42P01", SchemaMismatch, Action.ESCALATE),
        ("42703", SchemaMismatch, Action.ESCALATE),
        ("42804", SchemaMismatch, Action.ESCALATE),
        ("22P02", BadData, Action.QUARANTINE),
        ("23505", BadData, Action.QUARANTINE),
        ("42601", DestinationError, Action.ESCALATE),  # syntax error: anything else
    ],
)
def test_each_sqlstate_meets_its_class_and_healing_action(
    sqlstate: str, kind: type[MendflowError], action: Action
) -> None:
    """The SQLSTATE decides the class; the playbook retries the transient ones (a failed write
    is rolled back and the run restarted) and escalates the permanent ones."""
    error = _translated(psycopg.errors.lookup(sqlstate)("server said so"))
    assert type(error) is kind
    assert _action(error) is action
    assert str(error).endswith(".")
    assert f"SQLSTATE {sqlstate}" in str(error)


def test_every_sqlstate_in_the_table_is_one_postgresql_knows() -> None:
    """A typo in the table would never match: each code names a real SQLSTATE or class."""
    known = {cls.sqlstate for cls in vars(psycopg.errors).values()
             if isinstance(cls, type) and issubclass(cls, psycopg.Error) and cls.sqlstate}
    for key, _, hint in ERRORS:
        assert key in known or any(code.startswith(key) for code in known), key
        assert hint
        assert not hint.endswith(".")


def test_a_statement_timeout_is_transient(pg_url: str) -> None:
    """statement_timeout cancels the statement (57014): retried, not escalated."""
    with psycopg.connect(pg_url) as con:
        con.execute("SET statement_timeout = '100ms'")
        exc = _raised(lambda: con.execute("SELECT pg_sleep(5)"))
    assert exc.sqlstate == "57014"
    error = _translated(exc)
    assert isinstance(error, DestinationUnavailable)
    assert error.retryable
    assert "statement_timeout" in str(error)


def test_a_serialization_failure_is_transient(pg_url: str) -> None:
    """Two SERIALIZABLE transactions update one row: the later one fails (40001), retried."""
    with psycopg.connect(pg_url, autocommit=True) as setup:
        setup.execute("CREATE TABLE counter (id int PRIMARY KEY, n int)")
        setup.execute("INSERT INTO counter VALUES (1, 0)")
    with psycopg.connect(pg_url) as first, psycopg.connect(pg_url) as second:
        for con in (first, second):
            con.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            con.execute("SELECT n FROM counter WHERE id = 1")
        first.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
        first.commit()
        exc = _raised(lambda: second.execute("UPDATE counter SET n = n + 1 WHERE id = 1"))
    assert exc.sqlstate == "40001"
    error = _translated(exc)
    assert isinstance(error, DestinationUnavailable)
    assert error.retryable


def test_a_deadlock_is_transient(pg_url: str) -> None:
    """Two connections lock two rows in opposite orders: the server breaks the deadlock by
    failing one of them (40P01), which is retried."""
    with psycopg.connect(pg_url, autocommit=True) as setup:
        setup.execute("CREATE TABLE pair (id int PRIMARY KEY, n int)")
        setup.execute("INSERT INTO pair VALUES (1, 0), (2, 0)")
    failures: list[psycopg.Error] = []
    both_locked = threading.Barrier(2, timeout=10)

    def lock(first: int, second: int) -> None:
        with psycopg.connect(pg_url) as con:
            con.execute("SET deadlock_timeout = '100ms'")
            try:
                con.execute("UPDATE pair SET n = n + 1 WHERE id = %s", (first,))
                both_locked.wait()
                con.execute("UPDATE pair SET n = n + 1 WHERE id = %s", (second,))
                con.commit()
            except psycopg.Error as exc:
                failures.append(exc)

    threads = [threading.Thread(target=lock, args=pair) for pair in ((1, 2), (2, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    [exc] = failures
    assert exc.sqlstate == "40P01"
    error = _translated(exc)
    assert isinstance(error, DestinationUnavailable)
    assert error.retryable


def test_a_connection_terminated_mid_copy_is_transient(pg_url: str) -> None:
    """pg_terminate_backend while a COPY streams: the write fails as unavailable, retried."""
    with psycopg.connect(pg_url, autocommit=True) as setup:
        setup.execute("CREATE TABLE sink (id bigint, note text)")
    chunk = b"".join(b"%d\tsome note\n" % i for i in range(10_000))

    def copy_while_killed(con: psycopg.Connection[Any]) -> None:
        pid = con.info.backend_pid
        with con.cursor().copy("COPY sink FROM STDIN") as copy:
            copy.write(chunk)
            with psycopg.connect(pg_url, autocommit=True) as killer:
                killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
            for _ in range(100):
                copy.write(chunk)

    with psycopg.connect(pg_url) as con:
        exc = _raised(lambda: copy_while_killed(con))
        assert con.broken or con.closed
    assert exc.sqlstate in {None, "57P01"}
    error = _translated(exc)
    assert isinstance(error, DestinationUnavailable)
    assert error.retryable


def test_a_missing_privilege_is_permanent(owned: OwnedServer) -> None:
    """A role that may read but not insert (42501): not retried, the hint says to GRANT."""
    with psycopg.connect(owned.database("errors"), autocommit=True) as admin:
        admin.execute("CREATE TABLE guarded (id int)")
        admin.execute("CREATE ROLE reader LOGIN")
        admin.execute("GRANT SELECT ON guarded TO reader")
    with psycopg.connect(owned.database("errors", user="reader")) as con:
        exc = _raised(lambda: con.execute("INSERT INTO guarded VALUES (1)"))
    assert exc.sqlstate == "42501"
    error = _translated(exc)
    assert isinstance(error, DestinationError)
    assert not error.retryable
    assert "GRANT" in str(error)
    assert _action(error) is Action.ESCALATE


@pytest.mark.parametrize("uri", [False, True])
def test_a_wrong_password_is_permanent_and_never_shown(owned: OwnedServer, uri: bool) -> None:
    """Refused credentials escalate with a hint about them; the password is masked both in a
    libpq string and in a URL."""
    url = owned.database("errors", user="loader", password=SECRET + "-old")
    if uri:
        url = f"postgresql://loader:{SECRET}-old@127.0.0.1:{owned.port}/errors"
    exc = _raised(lambda: psycopg.connect(url))
    error = translate(exc, f"connecting to {url}", dependency=url, secrets=[SECRET + "-old"])
    assert isinstance(error, DestinationError)
    assert not error.retryable
    assert "password" in str(error)
    assert _action(error) is Action.ESCALATE
    assert SECRET not in str(error)
    assert SECRET not in error.dependency
    with psycopg.connect(owned.database("errors", user="loader", password=SECRET)) as con:
        assert con.execute("SELECT current_user").fetchone() == ("loader",)


def test_a_missing_password_is_permanent(owned: OwnedServer) -> None:
    """The server asks for a password and none is given: escalated, not retried."""
    exc = _raised(lambda: psycopg.connect(owned.database("errors", user="loader")))
    error = _translated(exc)
    assert isinstance(error, DestinationError)
    assert not error.retryable


def test_a_server_shutdown_and_a_refused_connection_are_transient(owned: OwnedServer) -> None:
    """The server stops under an open session (57P01 or a dropped socket), then refuses new
    connections: both unavailable, retried; once it is back, connecting works again."""
    con = psycopg.connect(owned.database("errors"), autocommit=True)
    try:
        owned.stop(mode="fast")
        dropped = _raised(lambda: con.execute("SELECT 1"))
        refused = _raised(lambda: psycopg.connect(owned.database("errors")))
    finally:
        con.close()
        owned.start()
    assert dropped.sqlstate in {None, "57P01"}
    assert refused.sqlstate is None
    for exc in (dropped, refused):
        error = _translated(exc)
        assert isinstance(error, DestinationUnavailable)
        assert error.retryable
    with psycopg.connect(owned.database("errors")) as again:
        assert again.execute("SELECT 1").fetchone() == (1,)


def test_data_and_schema_errors_of_a_real_server(pg_url: str) -> None:
    """A bad value (22xxx) and a duplicate key (23505) are bad data; a missing table or column
    is a schema mismatch."""
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("CREATE TABLE t (id int PRIMARY KEY)")
        con.execute("INSERT INTO t VALUES (1)")
        cases: tuple[tuple[LiteralString, type[MendflowError]], ...] = (
            ("SELECT 'n/a'::int", BadData),
            ("INSERT INTO t VALUES (1)", BadData),
            ("SELECT * FROM missing", SchemaMismatch),
            ("SELECT nope FROM t", SchemaMismatch),
        )
        for statement, kind in cases:
            with pytest.raises(psycopg.Error) as info:
                con.execute(statement)
            assert type(_translated(info.value)) is kind


# -- end to end: the PostgreSQL destination under run_healing ------------------------------------


def _drops(folder: Path, files: int = 3, rows: int = 100) -> Path:
    folder.mkdir()
    for n in range(files):
        lines = (json.dumps({"id": n * rows + i, "v": i * 2}) + "\n" for i in range(rows))
        (folder / f"part-{n}.jsonl").write_text("".join(lines), encoding="utf-8")
    return folder


def _pipeline(drops: Path, url: str, **destination: Any) -> Pipeline:
    """Three batches of 100 rows appended to ``orders``; the destination's writes retried up
    to 20 times, without a breaker (these tests count the retries themselves)."""
    return Pipeline(
        name="orders", source=FileSource(str(drops / "*.jsonl"), batch_size=100),
        destination=PostgresSink(url, table="orders", **destination),
        destination_breaker=None,
        destination_retry=Retry(attempts=20, base_s=0.01, cap_s=0.05, deadline_s=60),
    )


def test_a_missing_insert_privilege_escalates_once_under_healing(
    owned: OwnedServer, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """The loader's role may read the table but not insert: no retry, the run stops with a
    DestinationError, and one page goes out however often the run is tried."""
    url = owned.create_database("denied")
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("CREATE TABLE orders (id bigint, v bigint)")
        admin.execute("CREATE ROLE clerk LOGIN")
        admin.execute("GRANT CREATE ON DATABASE denied TO clerk")
        admin.execute("GRANT CREATE, USAGE ON SCHEMA public TO clerk")
        admin.execute("GRANT SELECT ON orders TO clerk")
    pipeline = _pipeline(_drops(tmp_path / "drops"), owned.database("denied", user="clerk"))
    store, log = StateStore(f"sqlite:///{tmp_path / 's.db'}"), EventLog()
    notifiers = [WebhookNotifier(receiver.url)]
    for _ in range(2):
        with pytest.raises(DestinationError, match="permission denied for table orders"):
            run_healing(pipeline, store=store, notifiers=notifiers, hooks=[log],
                        clock=FakeClock())
    [incident] = Ledger(store).incidents(pipeline="orders")
    store.close()
    assert (incident["failure_class"], incident["escalated"]) == ("permanent", True)
    assert [(a["action"], a["outcome"]) for a in incident["actions"]] == [
        ("escalate", "paged"), ("escalate", "already_paged")]
    assert list(receiver.pages().values()) == [1]
    assert not [e for e in log if isinstance(e, RetryScheduled)]


def _active_backend(url: str) -> int:
    """The pid of the one other session on ``url``'s database: the sink's."""
    with psycopg.connect(url, autocommit=True) as con:
        row = con.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'").fetchone()
    assert row is not None
    return int(row[0])


class _Fault:
    """A run hook that does ``act`` once, when the ``nth`` event of type ``kind`` arrives."""

    def __init__(self, kind: type[Event], nth: int, act: Callable[[], None]) -> None:
        self.kind, self.nth, self.act, self.seen = kind, nth, act, 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, self.kind):
            self.seen += 1
            if self.seen == self.nth:
                self.act()


def _heal_with(pipeline: Pipeline, store: StateStore, fault: _Fault) -> EventLog:
    log = EventLog()
    result = run_healing(pipeline, store=store, hooks=[fault, log], clock=FakeClock())
    assert (result.rows_loaded, result.batches) == (300, 3)
    return log


def _reference(drops: Path) -> tuple[int, str]:
    with fresh_database() as url:
        _pipeline(drops, url).run(state=None)
        return pg_table_hash(url, "orders")


def test_a_backend_terminated_before_commit_is_retried_and_loads_once(
    pg_url: str, tmp_path: Path
) -> None:
    """The sink's session is killed inside the load transaction, just before COMMIT: the
    batch is rolled back, retried on a new connection, and every row lands exactly once."""
    drops = _drops(tmp_path / "drops")

    def terminate() -> None:
        with psycopg.connect(pg_url, autocommit=True) as con:
            con.execute("SELECT pg_terminate_backend(%s, 5000)", (_active_backend(pg_url),))

    store = StateStore(f"sqlite:///{tmp_path / 's.db'}")
    log = _heal_with(_pipeline(drops, pg_url), store, _Fault(BatchStaged, 2, terminate))
    [incident] = Ledger(store).incidents(pipeline="orders")
    store.close()
    [retry] = [e for e in log if isinstance(e, RetryScheduled)]
    assert retry.error_type == "DestinationUnavailable"
    assert (incident["status"], incident["escalated"]) == ("healed", False)
    assert pg_table_hash(pg_url, "orders") == _reference(drops)


def test_a_statement_timeout_on_a_locked_table_is_retried_until_the_lock_goes(
    pg_url: str, tmp_path: Path
) -> None:
    """Another session holds the table locked for a second: the sink's statement times out
    (statement_timeout_s), is retried, and loads once the lock is released."""
    drops = _drops(tmp_path / "drops")
    blocker = psycopg.connect(pg_url)
    released = threading.Timer(1.0, blocker.rollback)

    def lock() -> None:
        blocker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        released.start()

    store = StateStore(f"sqlite:///{tmp_path / 's.db'}")
    try:
        pipeline = _pipeline(drops, pg_url, statement_timeout_s=0.2)
        log = _heal_with(pipeline, store, _Fault(BatchRead, 2, lock))
    finally:
        released.join()
        blocker.close()
        store.close()
    retries = [e for e in log if isinstance(e, RetryScheduled)]
    assert retries
    assert {e.error_type for e in retries} == {"DestinationUnavailable"}
    assert all("statement_timeout" in e.error for e in retries)
    assert pg_table_hash(pg_url, "orders") == _reference(drops)


def test_the_sink_refused_credentials_escalate_without_the_password(owned: OwnedServer) -> None:
    """A PostgresSink with a wrong password in its URL: a DestinationError about credentials;
    neither its message nor the sink's name shows the password."""
    url = f"postgresql://loader:{SECRET}-old@127.0.0.1:{owned.port}/errors"
    sink = PostgresSink(url, table="orders")
    with pytest.raises(DestinationError, match="credentials") as info:
        sink.position("orders")
    sink.close()
    assert SECRET not in str(info.value)
    assert SECRET not in info.value.dependency
    assert SECRET not in sink.name
