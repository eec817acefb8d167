"""Record contracts: declared columns with types and checks, validated a whole batch at once.

``mendflow.contracts.validate.validate`` splits a batch; ``mendflow.contracts.infer.infer``
drafts a contract from a sample of a file.
"""

from mendflow.contracts.contract import (
    Column,
    Contract,
    Expr,
    Length,
    Matches,
    OneOf,
    OnError,
    Range,
)

__all__ = [
    "Column",
    "Contract",
    "Expr",
    "Length",
    "Matches",
    "OnError",
    "OneOf",
    "Range",
]
