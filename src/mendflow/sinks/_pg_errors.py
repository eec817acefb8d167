"""PostgreSQL errors translated to mendflow's taxonomy, by SQLSTATE, where they enter the sink.

The server's SQLSTATE decides (an exact code first, then its two-character class); an error
without one is a client-side failure (refused, dropped or closed connection, a timeout) and its
psycopg class decides. Message text is never read. Passwords are masked out of the message.

libpq gives no SQLSTATE for a failed connection attempt. A wrong or missing password is still
told apart (the server asked for a password and no session started: permanent, as 28xxx); a
database or role that does not exist is not, so it counts as unavailable and is retried until
the pipeline's ``destination_retry`` deadline, then escalates.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from mendflow._redact import redact
from mendflow.exceptions import (
    BadData,
    DestinationError,
    DestinationUnavailable,
    MendflowError,
    ResourceExhausted,
    SchemaMismatch,
)

__all__ = ["ERRORS", "UNCODED", "classify", "translate"]

_DOWN = "the server is down, restarting or unreachable; it is retried behind the breaker"
_BUSY = "a lock conflict or a timeout that passes by itself; the write is retried"

#: SQLSTATE (an exact code, or a two-character class) -> what it means to mendflow, and what to
#: do. Exact codes come before the class they belong to: the first match wins.
ERRORS: tuple[tuple[str, type[MendflowError], str], ...] = (
    ("57P01", DestinationUnavailable, _DOWN),  # admin_shutdown
    ("57P02", DestinationUnavailable, _DOWN),  # crash_shutdown
    ("57P03", DestinationUnavailable, _DOWN),  # cannot_connect_now (starting up)
    ("57014", DestinationUnavailable,  # query_canceled: statement_timeout or a cancel
     "the statement was cancelled (statement_timeout); it is retried, raise "
     "statement_timeout_s if it keeps happening"),
    ("40001", DestinationUnavailable, _BUSY),  # serialization_failure
    ("40P01", DestinationUnavailable, _BUSY),  # deadlock_detected
    ("55P03", DestinationUnavailable, _BUSY),  # lock_not_available
    ("53300", DestinationUnavailable,  # too_many_connections
     "the server has no free connection slot; it is retried, or raise max_connections"),
    ("53200", ResourceExhausted, "the server ran out of memory; use a smaller batch_size"),
    ("53100", ResourceExhausted, "the server's disk is full; free space, then run again"),
    ("42501", DestinationError,  # insufficient_privilege
     "the database role lacks a privilege on the table or schema; GRANT it (e.g. INSERT, "
     "UPDATE, DELETE, CREATE), then run again"),
    ("3D000", DestinationError,  # invalid_catalog_name
     "the database does not exist; create it or fix the destination url"),
    ("42P01", SchemaMismatch,  # undefined_table
     "a table is missing; let mendflow create it, or check the destination schema and table"),
    ("42703", SchemaMismatch,  # undefined_column
     "the table lacks a column of the batch; allow schema evolution or add the column"),
    ("42804", SchemaMismatch,  # datatype_mismatch
     "a column's type does not fit the batch; declare `columns:` types or alter the column"),
    ("08", DestinationUnavailable, _DOWN),  # connection_exception
    ("40", DestinationUnavailable, _BUSY),  # transaction_rollback
    ("53", ResourceExhausted,  # insufficient_resources
     "the server ran short of a resource; use a smaller batch_size or raise its limits"),
    ("28", DestinationError,  # invalid_authorization_specification, invalid_password
     "the server refused the credentials; check the user and password of the destination "
     "url (or PGUSER / PGPASSWORD) and pg_hba.conf"),
    ("22", BadData,  # data_exception
     "values of this batch do not fit the table's columns; fix them, or let healing "
     "quarantine the batch to the dead letters"),
    ("23", BadData,  # integrity_constraint_violation
     "rows of this batch break a constraint of the table; fix them, or let healing "
     "quarantine the batch to the dead letters"),
)

#: Errors without a SQLSTATE (raised by the client, not the server), by psycopg class.
UNCODED: tuple[tuple[type[psycopg.Error], type[MendflowError], str], ...] = (
    (psycopg.OperationalError, DestinationUnavailable, _DOWN),
    (psycopg.InterfaceError, DestinationUnavailable, _DOWN),
    (psycopg.DataError, BadData,
     "a value of this batch cannot be sent as its column's type; fix it, or let healing "
     "quarantine the batch to the dead letters"),
)

_OTHER = (DestinationError, "check the destination table, its settings and the server's log")


def classify(exc: psycopg.Error) -> tuple[type[MendflowError], str]:
    """The mendflow class of ``exc`` and the hint that says what to do about it."""
    code = exc.sqlstate
    if not code and _credentials_refused(exc):
        return next((kind, hint) for key, kind, hint in ERRORS if key == "28")
    if code:
        for key, kind, hint in ERRORS:
            if code == key or (len(key) == 2 and code.startswith(key)):
                return kind, hint
        return _OTHER
    for driver, kind, hint in UNCODED:
        if isinstance(exc, driver):
            return kind, hint
    return _OTHER


def _credentials_refused(exc: psycopg.Error) -> bool:
    """A connection attempt the server refused at authentication: libpq reports no SQLSTATE
    before a session exists, but says whether the server asked for a password. ``backend_pid``
    is 0 until authentication succeeds, so a session dropped later never counts."""
    conn = exc.pgconn  # set only on errors of a connection attempt
    if conn is None or conn.backend_pid:
        return False
    return bool(conn.used_password or conn.needs_password)


def translate(
    exc: psycopg.Error, doing: str, *, dependency: str, secrets: Sequence[str] = ()
) -> MendflowError:
    """Translate a psycopg error into mendflow's taxonomy; raise the result ``from exc``.

    ``doing`` says what the sink was doing ("loading batch b1 into public.orders");
    ``secrets`` (the password) are masked in the message, as is any password in a URL.
    """
    kind, hint = classify(exc)
    code = f" [SQLSTATE {exc.sqlstate}]" if exc.sqlstate else ""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    message = f"{redact(doing, secrets)}: {redact(detail, secrets)}{code}. {hint}."
    return kind(message, dependency=redact(dependency, secrets))
