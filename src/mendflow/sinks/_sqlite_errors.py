"""SQLite errors translated to mendflow's taxonomy, where they enter the sink.

SQLite says what went wrong by its result code (``sqlite_errorcode``, Python 3.11+), not by the
exception class (``database is locked`` and ``no such table`` are both ``OperationalError``), so
the primary code decides; an error without one (a closed connection, a value the driver cannot
bind) is translated by its class.
"""

from __future__ import annotations

import sqlite3

import duckdb
import pyarrow as pa

from mendflow.exceptions import (
    BadData,
    DestinationError,
    DestinationUnavailable,
    MendflowError,
    ResourceExhausted,
    SchemaMismatch,
)
from mendflow.sinks import _duckdb_errors

__all__ = ["CLASSES", "CODES", "boundary", "kind_of", "translate"]

#: SQLite's primary result codes that are errors, and what each means to mendflow; a test fails
#: if one is missing.
CODES: dict[int, type[MendflowError]] = {
    sqlite3.SQLITE_ERROR: DestinationError,  # SQL error or missing database object
    sqlite3.SQLITE_INTERNAL: DestinationError,
    sqlite3.SQLITE_PERM: DestinationError,
    sqlite3.SQLITE_ABORT: DestinationUnavailable,  # a statement was aborted: try it again
    sqlite3.SQLITE_BUSY: DestinationUnavailable,  # another connection holds the lock
    sqlite3.SQLITE_LOCKED: DestinationUnavailable,
    sqlite3.SQLITE_NOMEM: ResourceExhausted,
    sqlite3.SQLITE_READONLY: DestinationError,
    sqlite3.SQLITE_INTERRUPT: DestinationUnavailable,
    sqlite3.SQLITE_IOERR: DestinationUnavailable,
    sqlite3.SQLITE_CORRUPT: DestinationError,
    sqlite3.SQLITE_NOTFOUND: DestinationError,
    sqlite3.SQLITE_FULL: ResourceExhausted,  # the disk (or max_page_count) is full
    sqlite3.SQLITE_CANTOPEN: DestinationError,  # no such folder, or no permission
    sqlite3.SQLITE_PROTOCOL: DestinationUnavailable,  # a lock race in WAL mode
    sqlite3.SQLITE_EMPTY: DestinationError,
    sqlite3.SQLITE_SCHEMA: DestinationUnavailable,  # the schema changed under the statement
    sqlite3.SQLITE_TOOBIG: ResourceExhausted,  # a value or statement over SQLite's limits
    sqlite3.SQLITE_CONSTRAINT: BadData,
    sqlite3.SQLITE_MISMATCH: SchemaMismatch,
    sqlite3.SQLITE_MISUSE: DestinationError,
    sqlite3.SQLITE_NOLFS: DestinationError,
    sqlite3.SQLITE_AUTH: DestinationError,
    sqlite3.SQLITE_FORMAT: DestinationError,
    sqlite3.SQLITE_RANGE: DestinationError,
    sqlite3.SQLITE_NOTADB: DestinationError,
    sqlite3.SQLITE_NOTICE: DestinationError,
    sqlite3.SQLITE_WARNING: DestinationError,
}

#: The driver's exception classes, for errors without a result code (most specific first).
CLASSES: tuple[tuple[type[Exception], type[MendflowError]], ...] = (
    (sqlite3.IntegrityError, BadData),
    (sqlite3.DataError, BadData),
    (sqlite3.OperationalError, DestinationUnavailable),
    (sqlite3.NotSupportedError, DestinationError),
    (sqlite3.ProgrammingError, DestinationError),
    (sqlite3.InternalError, DestinationError),
    (sqlite3.InterfaceError, DestinationError),
    (sqlite3.DatabaseError, DestinationError),
    (sqlite3.Warning, DestinationError),
    (sqlite3.Error, DestinationError),
)

_HINTS: dict[type[MendflowError], str] = {
    ResourceExhausted: "free disk space (or raise SQLite's limits) and run again; a smaller "
    "batch_size needs less room per transaction",
    DestinationUnavailable: "another process holds the database file (a long transaction, an "
    "open editor); let it finish, or raise busy_timeout_s, then run again",
    SchemaMismatch: "make the batch fit the table (declare `columns:` types or transform it)",
    BadData: "rows of this batch break a constraint of the table; fix them, or let healing "
    "quarantine the batch to the dead letters",
    DestinationError: "check the database file, its folder and permissions, and the "
    "destination settings",
}


def kind_of(exc: sqlite3.Error) -> type[MendflowError]:
    """mendflow's class for ``exc``: by its primary result code, else by its class."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in CODES:
        return CODES[code & 0xFF]
    return next(cls for driver, cls in CLASSES if isinstance(exc, driver))


def translate(exc: sqlite3.Error, doing: str, *, dependency: str = "sqlite") -> MendflowError:
    """Translate an ``sqlite3`` error into mendflow's taxonomy, with what to do."""
    kind = kind_of(exc)
    name = getattr(exc, "sqlite_errorname", None)
    said = f"{exc} ({name})" if name else str(exc)
    return kind(f"{doing}: {said}. {_HINTS[kind]}.", dependency=dependency)


def boundary(exc: BaseException, doing: str, *, dependency: str) -> MendflowError | None:
    """``exc`` translated when a library the sink calls raised it: ``sqlite3``; DuckDB and
    Arrow, which check and convert the batch; the driver refusing an integer beyond 64 bits.
    None for anything else (mendflow's own errors, an interrupt), to be raised as it is."""
    if isinstance(exc, sqlite3.Error):
        return translate(exc, doing, dependency=dependency)
    if isinstance(exc, duckdb.Error):
        return _duckdb_errors.translate(exc, doing, dependency=dependency)
    if isinstance(exc, pa.ArrowMemoryError):
        return ResourceExhausted(f"{doing}: {exc}. {_HINTS[ResourceExhausted]}.",
                                 dependency=dependency)
    if isinstance(exc, pa.ArrowException):
        return SchemaMismatch(f"{doing}: {exc}. SQLite cannot take a column of this batch as it "
                              "is; cast it with a transform.", dependency=dependency)
    if isinstance(exc, OverflowError):
        return BadData(f"{doing}: {exc}. SQLite integers have 64 bits; cast the column to text "
                       "or a float with a transform.", dependency=dependency)
    return None
