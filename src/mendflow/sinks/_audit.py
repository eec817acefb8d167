"""Write-audit-publish, the dialect-free part: the load's checks, run before its commit.

A sink calls ``run_checks`` inside the load transaction once the rows and dead letters are in,
handing it its own two queries: ``history(window)`` (rows of the pipeline's newest ``window``
committed batches that loaded any, oldest first, replays left out) and
``duplicate_keys(columns)`` (keys of the batch held by more than one row of the table). It
builds the ``Audit``, runs ``Reconciliation`` and the load's checks, and raises ``CheckFailed``
when a blocking one fails, so the sink rolls everything back.

Events (``check.ran``): only findings that did not pass, so a healthy pipeline adds no event per
check per batch. A rolled-back batch's failures are emitted at once (the transaction is gone,
the finding is real); a committed batch's warnings by ``report``, after the commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import pyarrow as pa

from mendflow.batch import Audit, Finding, Load
from mendflow.checks import Reconciliation
from mendflow.events import CheckRan, current_run, emit_in_run
from mendflow.exceptions import CheckFailed
from mendflow.typing import Check

__all__ = ["report", "run_checks"]


def run_checks(
    load: Load,
    target: str,
    data: pa.Table,
    dead: pa.Table,
    *,
    history: Callable[[int], Sequence[int]],
    duplicate_keys: Callable[[Sequence[str]], int],
) -> list[Finding]:
    """Run the load's checks on what it put in ``target``; raise ``CheckFailed`` on a blocking
    failure (the caller rolls back), else return every finding for ``report``."""
    checks = _checks_of(load, data)
    window = max((int(getattr(check, "window", 0)) for check in checks), default=0)
    run = current_run()
    seen = Audit(
        pipeline=load.pipeline, batch_id=load.batch_id, table=target,
        records_read=load.records_read, rows_loaded=data.num_rows,
        dead_letters=dead.num_rows, data=data,
        # a replay's size is what the dead-letter store held, not the source's volume
        history=() if load.position is None or window <= 0 else tuple(history(window)),
        now=run.now() if run is not None else time.time(),
        duplicate_keys=duplicate_keys,
    )
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
