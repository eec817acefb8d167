"""The widening lattice of SQL types: whether every value of one type is exactly a value of
another (``fits``), and the narrowest type two types both fit (``common``).

The lattice itself is drawn in ``mendflow.contracts.schema``'s docstring, the public home of
``fits``, ``common`` and ``NULL``.
"""

from __future__ import annotations

import re

#: The type of a batch column whose every value is null: it fits anything and adds nothing.
NULL = "NULL"

INTS: dict[str, tuple[int, bool]] = {  # bits of magnitude, signed
    "TINYINT": (7, True), "SMALLINT": (15, True), "INTEGER": (31, True), "BIGINT": (63, True),
    "HUGEINT": (127, True), "UTINYINT": (8, False), "USMALLINT": (16, False),
    "UINTEGER": (32, False), "UBIGINT": (64, False), "UHUGEINT": (128, False),
}
FLOATS = {"FLOAT": 24, "DOUBLE": 53}  # mantissa bits
_TIMES = ("DATE", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP")
_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")
_NOT_TEXT = ("BLOB", "VARCHAR")
_WIDER = ("SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "DOUBLE", "TIMESTAMP")


def fits(value: str, column: str) -> bool:
    """Whether every value of type ``value`` is exactly a value of type ``column``."""
    if value in (column, NULL):
        return True
    if column == "VARCHAR":
        return value not in _NOT_TEXT and not _nested(value)
    if value in INTS:
        return _int_fits(value, column)
    if value == "FLOAT":
        return column == "DOUBLE"
    if value in _TIMES and column in _TIMES:
        return _TIMES.index(value) < _TIMES.index(column)
    return _decimal_fits(value, column)


def common(a: str, b: str) -> str | None:
    """The narrowest type both fit losslessly, never ``VARCHAR``; None if there is none."""
    if fits(a, b) and b != "VARCHAR":
        return b
    if fits(b, a) and a != "VARCHAR":
        return a
    joined = _decimal_join(a, b)
    candidates: tuple[str, ...] = (*_WIDER[:4], *((joined,) if joined else ()), *_WIDER[4:])
    for wider in candidates:
        if fits(a, wider) and fits(b, wider):
            return wider
    return None


def _int_fits(value: str, column: str) -> bool:
    bits, signed = INTS[value]
    if column in INTS:
        to_bits, to_signed = INTS[column]
        return bits <= to_bits and (to_signed or not signed)
    if column in FLOATS:
        return bits <= FLOATS[column]
    scale = _decimal(column)
    return scale is not None and scale[0] - scale[1] >= len(str(2**bits))


def _decimal_fits(value: str, column: str) -> bool:
    have, want = _decimal(value), _decimal(column)
    if have is None:
        return False
    if want is None:  # a decimal without decimals into an integer with room for every digit
        return column in INTS and have[1] == 0 and have[0] < len(str(2 ** INTS[column][0]))
    return want[1] >= have[1] and want[0] - want[1] >= have[0] - have[1]


def _decimal_join(a: str, b: str) -> str | None:
    digits = [_digits(t) for t in (a, b)]
    if None in digits:
        return None
    whole = max(d[0] for d in digits if d)
    scale = max(d[1] for d in digits if d)
    return f"DECIMAL({whole + scale},{scale})" if whole + scale <= 38 else None


def _digits(kind: str) -> tuple[int, int] | None:
    """Integer digits and decimals a type needs, for numbers that have them."""
    if kind in INTS:
        return len(str(2 ** INTS[kind][0])), 0
    scale = _decimal(kind)
    return None if scale is None else (scale[0] - scale[1], scale[1])


def _decimal(kind: str) -> tuple[int, int] | None:
    match = _DECIMAL.fullmatch(kind)
    return None if match is None else (int(match[1]), int(match[2]))


def _nested(kind: str) -> bool:
    return kind.endswith("]") or kind.startswith(("STRUCT", "MAP", "UNION"))
