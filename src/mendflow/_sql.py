"""SQL text helpers. Identifiers are always quoted; values are always bound, never formatted in."""

from __future__ import annotations

import re

from mendflow.exceptions import ConfigError

#: The column types a pipeline may declare, by the names users write, mapped to DuckDB types.
TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "text": "VARCHAR",
    "varchar": "VARCHAR",
    "int": "BIGINT",
    "integer": "BIGINT",
    "bigint": "BIGINT",
    "int32": "INTEGER",
    "float": "DOUBLE",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "timestamptz": "TIMESTAMPTZ",
    "json": "JSON",
}
_DECIMAL = re.compile(r"decimal\(\s*(\d{1,2})\s*,\s*(\d{1,2})\s*\)")


def ident(name: str) -> str:
    """Quote ``name`` as an SQL identifier: any text becomes one identifier and nothing else."""
    if "\x00" in name:
        raise ConfigError(f"identifier {name!r} contains a NUL byte; rename the column or table.")
    return '"' + name.replace('"', '""') + '"'


def sql_type(name: str) -> str:
    """Translate a declared column type to its DuckDB type, or say which types exist."""
    key = name.strip().lower()
    if key in TYPES:
        return TYPES[key]
    match = _DECIMAL.fullmatch(key)
    if match and int(match[2]) <= int(match[1]) <= 38:
        return f"DECIMAL({match[1]},{match[2]})"
    known = ", ".join(sorted(TYPES)) + ", decimal(P,S)"
    raise ConfigError(f"unknown column type {name!r}; use one of: {known}.")
