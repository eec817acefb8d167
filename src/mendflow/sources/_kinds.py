"""JSON values typed exactly: a value is taken by its column's type only if it is of a kind that
type holds, never rounded or converted on the way.

DuckDB's json_transform converts without a word: 1.7 or true to BIGINT as 2 or 1, "007" to 7, a
number to BOOLEAN. So the columns of those types (``checked``) are transformed as JSON text and
typed here. The fast path casts the text with Arrow, whose strict parse takes only what is
written as the type (measured on 1M lines: about as fast as the typed transform, where a
``json_type`` test per value in SQL cost ~25 % more); any other value sends the chunk to the
careful path. That one casts in SQL only a value of a kind the type takes (a JSON integer, or an
integral number up to 2**53, for an integer type; a number for DOUBLE; a boolean for BOOLEAN), so
any other value, like one over the type's range, is NULL there, which makes it a type misfit.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from mendflow._sql import ident

_INTEGRAL = (
    "(json_type({v}) = 'DOUBLE' AND CAST({v} AS DOUBLE) = trunc(CAST({v} AS DOUBLE)) "
    "AND abs(CAST({v} AS DOUBLE)) <= 9007199254740992)"
)
#: Per checked type, the SQL test a JSON value ``{v}`` passes to be taken.
_SQL = {
    "BIGINT": "json_type({v}) IN ('BIGINT', 'UBIGINT') OR " + _INTEGRAL,
    "UBIGINT": "json_type({v}) IN ('BIGINT', 'UBIGINT') OR " + _INTEGRAL,
    "DOUBLE": "json_type({v}) IN ('BIGINT', 'UBIGINT', 'DOUBLE')",
    "BOOLEAN": "json_type({v}) = 'BOOLEAN'",
}
#: Per checked type, the Arrow type the fast path casts its JSON text to.
_ARROW = {
    "BIGINT": pa.int64(),
    "UBIGINT": pa.uint64(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
}
_BOOLS = pa.array(["true", "false"])


def structure(types: dict[str, str]) -> dict[str, str]:
    """The structure json_transform reads ``types`` as: the checked columns as JSON text."""
    return {c: "JSON" if t in _ARROW else t for c, t in types.items()}


def exact(values: pa.ChunkedArray, kind: str) -> pa.ChunkedArray | None:
    """A column as transformed by ``structure``, typed ``kind`` by Arrow's strict cast (not 1.7,
    1.0 or true for an integer, nor "5"), or None when a value is not written as one."""
    if kind not in _ARROW:
        return values
    if kind == "BOOLEAN" and not pc.all(pc.is_in(pc.fill_null(values, "true"), _BOOLS)).as_py():
        return None
    try:
        return values.cast(_ARROW[kind])
    except pa.ArrowInvalid:
        return None


def select(types: dict[str, str], *, struct: str) -> str:
    """The SQL select list typing ``struct`` (lines transformed as ``structure``), a value of a
    kind its type does not take, or over its range, NULL."""
    return ", ".join(_column(f"{struct}.{ident(c)}", t) for c, t in types.items())


def _column(value: str, kind: str) -> str:
    if kind not in _SQL:
        return value
    fits = _SQL[kind].format(v=value)
    return f"CASE WHEN {fits} THEN TRY_CAST({value} AS {kind}) END"
