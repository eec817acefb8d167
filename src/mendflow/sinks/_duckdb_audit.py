"""Write-audit-publish in a DuckDB destination: the load's checks, run before its commit.

(Placeholder: the checks run here.)
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pyarrow as pa

from mendflow.batch import Finding, Load


def audit(
    con: duckdb.DuckDBPyConnection, target: str, load: Load, data: pa.Table, dead: pa.Table
) -> list[Finding]:
    """Run the load's checks inside its transaction; raise ``CheckFailed`` on a blocking one."""
    return []


def report(load: Load, findings: Sequence[Finding]) -> None:
    """Emit the findings of a committed batch."""
