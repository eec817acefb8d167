"""Service levels from the ledger and the run history (``mendflow slo``).

Per pipeline, over the span from its first run to ``now``:

- availability: the share of that span in which the data was fresh, i.e. the last successful run
  had finished no more than ``freshness_s`` earlier;
- MTTR: mean time from an incident's detection to its recovery, over healed incidents;
- MTBF: time not spent in an incident, divided by the number of incidents;
- auto-heal rate: incidents that healed without paging anyone, over incidents that have ended
  (healed or escalated);
- retries spent, and the retry success rate: retry sequences that ended in a success, over those
  plus runs that failed on a retryable error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from mendflow.state.schema import attempts, events, incidents, runs
from mendflow.state.store import StateStore


@dataclass(frozen=True, slots=True)
class ServiceLevel:
    """One pipeline's KPIs; None where there is nothing to measure yet."""

    pipeline: str
    span_s: float
    freshness_s: float
    availability: float | None
    incidents: int
    open_incidents: int
    mttr_s: float | None
    mtbf_s: float | None
    auto_heal_rate: float | None
    retries: int
    retry_success_rate: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def service_levels(store: StateStore, *, now: float, freshness_s: float) -> list[ServiceLevel]:
    """KPIs for every pipeline with a run in ``store``."""
    with store.engine.connect() as con:
        names = con.execute(sa.select(runs.c.pipeline).distinct().order_by(runs.c.pipeline))
        return [_level(con, str(name), now, freshness_s) for (name,) in names]


def _level(con: sa.Connection, pipeline: str, now: float, freshness_s: float) -> ServiceLevel:
    started = con.execute(
        sa.select(sa.func.min(runs.c.started_at)).where(runs.c.pipeline == pipeline)
    ).scalar_one()
    span = max(0.0, now - float(started))
    rows = con.execute(
        sa.select(incidents.c.detected_at, incidents.c.recovered_at, incidents.c.escalated,
                  incidents.c.status)
        .where(incidents.c.pipeline == pipeline)
    ).all()
    healed = [r.recovered_at - r.detected_at for r in rows if r.recovered_at is not None]
    down = sum(healed) + sum(now - r.detected_at for r in rows if r.recovered_at is None)
    ended = [r for r in rows if r.recovered_at is not None or r.escalated]
    auto = [r for r in ended if not r.escalated]
    retries, recovered, failed = _retries(con, pipeline)
    return ServiceLevel(
        pipeline=pipeline,
        span_s=span,
        freshness_s=freshness_s,
        availability=_availability(con, pipeline, float(started), now, freshness_s),
        incidents=len(rows),
        open_incidents=sum(1 for r in rows if r.recovered_at is None),
        mttr_s=sum(healed) / len(healed) if healed else None,
        mtbf_s=(span - down) / len(rows) if rows else None,
        auto_heal_rate=len(auto) / len(ended) if ended else None,
        retries=retries,
        retry_success_rate=recovered / (recovered + failed) if recovered + failed else None,
    )


def _availability(
    con: sa.Connection, pipeline: str, start: float, now: float, freshness_s: float
) -> float | None:
    """Fresh time over the span: each success keeps the data fresh for ``freshness_s``."""
    if now <= start:
        return None
    done = [
        float(t)
        for (t,) in con.execute(
            sa.select(runs.c.finished_at)
            .where(runs.c.pipeline == pipeline, runs.c.status == "succeeded")
            .order_by(runs.c.finished_at)
        )
        if t is not None and t <= now
    ]
    if not done:
        return 0.0
    ends = [*done[1:], now]
    fresh = sum(min(freshness_s, end - t) for t, end in zip(done, ends, strict=True))
    return fresh / (now - start)


def _retries(con: sa.Connection, pipeline: str) -> tuple[int, int, int]:
    """(retries spent, retry sequences that recovered, runs failed on a retryable error)."""
    spent = con.execute(
        sa.select(sa.func.count()).where(attempts.c.pipeline == pipeline)
    ).scalar_one()
    recovered = con.execute(
        sa.select(sa.func.count()).where(
            events.c.pipeline == pipeline, events.c.kind == "retry.recovered"
        )
    ).scalar_one()
    failed = con.execute(
        sa.select(sa.func.count()).where(
            runs.c.pipeline == pipeline, runs.c.status == "failed", runs.c.retryable.is_(True)
        )
    ).scalar_one()
    return int(spent), int(recovered), int(failed)
