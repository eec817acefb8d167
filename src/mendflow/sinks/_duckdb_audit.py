"""Write-audit-publish in a DuckDB destination: the load's checks, run before its commit.

``audit`` runs inside the load transaction once the rows and dead letters are in: it builds the
``Audit`` (the history of the pipeline's committed batches, the batch's keys looked up in the
table), runs ``Reconciliation`` and the load's checks, and raises ``CheckFailed`` when a blocking
one fails, so the sink rolls everything back. Events (``check.ran``): only findings that did not
pass, so a healthy pipeline adds no event per check per batch. A rolled-back batch's failures are
emitted at once (the transaction is gone, the finding is real); a committed batch's warnings by
``report``, after the commit.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import duckdb
import pyarrow as pa

from mendflow._sql import ident
from mendflow.batch import Audit, Finding, Load
from mendflow.checks import Reconciliation
from mendflow.events import CheckRan, current_run, emit_in_run
from mendflow.exceptions import CheckFailed
from mendflow.typing import Check

_AUDIT = "__mf_audit"


def audit(
    con: duckdb.DuckDBPyConnection, target: str, load: Load, data: pa.Table, dead: pa.Table
) -> list[Finding]:
    """Run the load's checks inside its transaction; raise ``CheckFailed`` on a blocking one."""
    checks = _checks_of(load, data)
    seen = _audit_of(con, target, load, data, dead, checks)
    findings = [check.check(seen) for check in checks]
    failed = [f for f in findings if not f.passed and f.blocking]
    if failed:
        _emit(load, findings)
        raise CheckFailed(_failure(load, target, failed), check=failed[0].check, dependency=target)
    return findings


def report(load: Load, findings: Sequence[Finding]) -> None:
    """Emit the findings of a committed batch that did not pass (its warnings)."""
    _emit(load, findings)


def _checks_of(load: Load, data: pa.Table) -> tuple[Check, ...]:
    """Reconciliation always; the load's checks only when it publishes rows to judge."""
    if not data.num_rows:
        return (Reconciliation(),)
    return (Reconciliation(), *load.checks)


def _audit_of(
    con: duckdb.DuckDBPyConnection,
    target: str,
    load: Load,
    data: pa.Table,
    dead: pa.Table,
    checks: Sequence[Check],
) -> Audit:
    window = max((int(getattr(check, "window", 0)) for check in checks), default=0)
    run = current_run()

    def duplicate_keys(columns: Sequence[str]) -> int:
        return _duplicate_keys(con, target, data, columns)

    return Audit(
        pipeline=load.pipeline, batch_id=load.batch_id, table=target,
        records_read=load.records_read, rows_loaded=data.num_rows,
        dead_letters=dead.num_rows, data=data,
        # a replay's size is what the dead-letter store held, not the source's volume
        history=() if load.position is None else _history(con, load.pipeline, window),
        now=run.now() if run is not None else time.time(),
        duplicate_keys=duplicate_keys,
    )


def _history(con: duckdb.DuckDBPyConnection, pipeline: str, window: int) -> tuple[int, ...]:
    """Rows of the pipeline's newest ``window`` committed batches that loaded any, oldest first
    (a quarantined batch loaded none; the batch being audited is not committed yet). Replays
    (ids ``replay:...``, see ``mendflow._replay``) are not the source's volume: left out."""
    if window <= 0:
        return ()
    rows = con.execute(
        "SELECT rows FROM (SELECT rows, committed_at, rowid AS n FROM _mendflow_batches "
        "WHERE pipeline = ? AND rows > 0 AND NOT starts_with(batch_id, 'replay:') "
        "ORDER BY committed_at DESC, n DESC LIMIT ?) ORDER BY committed_at, n",
        [pipeline, window],
    ).fetchall()
    return tuple(int(row[0]) for row in rows)


def _duplicate_keys(
    con: duckdb.DuckDBPyConnection, target: str, data: pa.Table, columns: Sequence[str]
) -> int:
    """Keys of the batch held by more than one row of ``target``: a semi-join on the batch's
    keys, so only those are grouped, however large the table."""
    key = ", ".join(ident(column) for column in columns)
    con.register(_AUDIT, data.select(list(columns)))
    try:
        [(count,)] = con.execute(  # fetch all: an unfinished result blocks the unregister
            f"SELECT count(*) FROM (SELECT 1 FROM {ident(target)} "
            f"WHERE ({key}) IN (SELECT {key} FROM {_AUDIT}) GROUP BY {key} HAVING count(*) > 1)"
        ).fetchall()
    finally:
        with contextlib.suppress(duckdb.TransactionException):  # see duckdb._unregister
            con.unregister(_AUDIT)
    return int(count)


def _failure(load: Load, target: str, failed: Sequence[Finding]) -> str:
    found = "; ".join(f"{f.check}: {f.message}" for f in failed)
    return (
        f"batch {load.batch_id} failed {len(failed)} blocking check(s) and was rolled back, "
        f"nothing of it published to {target} and the checkpoint not moved: {found}"
    )


def _emit(load: Load, findings: Sequence[Finding]) -> None:
    for finding in findings:
        if not finding.passed:
            emit_in_run(
                CheckRan, batch_id=load.batch_id, check=finding.check,
                blocking=finding.blocking, passed=False, message=finding.message,
            )
