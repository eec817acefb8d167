"""DuckDB errors translated to mendflow's taxonomy, by class, where they enter the sink."""

from __future__ import annotations

import duckdb

from mendflow.exceptions import (
    BadData,
    DestinationError,
    DestinationUnavailable,
    MendflowError,
    ResourceExhausted,
    SchemaMismatch,
)

__all__ = ["ERRORS", "translate"]

#: DuckDB's exception classes and what each means to mendflow; a test fails if one is missing.
ERRORS: tuple[tuple[type[duckdb.Error], type[MendflowError]], ...] = (
    (duckdb.OutOfMemoryException, ResourceExhausted),
    (duckdb.IOException, DestinationUnavailable),
    (duckdb.ConnectionException, DestinationUnavailable),
    (duckdb.HTTPException, DestinationUnavailable),
    (duckdb.TransactionException, DestinationUnavailable),
    (duckdb.InterruptException, DestinationUnavailable),
    (duckdb.ResourceInUseException, DestinationUnavailable),
    (duckdb.FatalException, DestinationUnavailable),
    (duckdb.ConversionException, SchemaMismatch),
    (duckdb.BinderException, SchemaMismatch),
    (duckdb.CatalogException, SchemaMismatch),
    (duckdb.ConstraintException, BadData),
    (duckdb.TypeMismatchException, SchemaMismatch),
    (duckdb.InvalidTypeException, SchemaMismatch),
    (duckdb.OutOfRangeException, BadData),
    (duckdb.DependencyException, SchemaMismatch),
    (duckdb.PermissionException, DestinationError),
    (duckdb.InvalidInputException, DestinationError),
    (duckdb.ParserException, DestinationError),
    (duckdb.SyntaxException, DestinationError),
    (duckdb.SequenceException, DestinationError),
    (duckdb.SerializationException, DestinationError),
    (duckdb.NotImplementedException, DestinationError),
    (duckdb.InternalException, DestinationError),
    (duckdb.IntegrityError, BadData),
    (duckdb.DataError, BadData),
    (duckdb.OperationalError, DestinationUnavailable),
    (duckdb.ProgrammingError, DestinationError),
    (duckdb.NotSupportedError, DestinationError),
    (duckdb.InternalError, DestinationError),
    (duckdb.DatabaseError, DestinationError),
    (duckdb.Error, DestinationError),
)


def translate(exc: duckdb.Error, doing: str, *, dependency: str = "duckdb") -> MendflowError:
    """Translate a DuckDB error into mendflow's taxonomy, by its class."""
    kind = next(cls for driver, cls in ERRORS if isinstance(exc, driver))
    hint = {
        ResourceExhausted: "use a smaller batch_size or raise DuckDB's memory_limit",
        DestinationUnavailable: "check no other process holds the database file, then run again",
        SchemaMismatch: "make the batch fit the table (declare `columns:` types or transform it)",
        BadData: "rows of this batch break a constraint of the table; fix them, or let healing "
        "quarantine the batch to the dead letters",
        DestinationError: "check the database file and the destination settings",
    }[kind]
    return kind(f"{doing}: {exc}. {hint}.", dependency=dependency)
