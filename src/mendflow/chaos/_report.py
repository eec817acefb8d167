"""What a chaos run found: per seed, and in sum; as JSON or as text."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mendflow.chaos._target import Digest
from mendflow.remediation.ledger import Ledger
from mendflow.state.store import StateStore

__all__ = ["ChaosReport", "SeedReport", "ledger_figures", "percentile"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SeedReport:
    """One seed: its plan, what was injected, how healing went, what the checker found.

    ``exits`` are the attempts' exit codes (-9: SIGKILLed, 3: escalated); ``recover_s`` the
    ledger's detection-to-recovery times of the seed's healed incidents, on the virtual clock
    (the waits a real run would have spent); ``waited_s`` the waits skipped in all.
    """

    seed: int
    plan: tuple[dict[str, Any], ...]
    injected: dict[str, int]
    exits: tuple[int, ...]
    kills: int
    escalated_runs: int
    pages: int
    corrupted: int
    waited_s: float
    wall_s: float
    problems: tuple[str, ...]
    incidents: int = 0
    open_incidents: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    recover_s: tuple[float, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the seed's outcome matched the reference."""
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "ok": self.ok}


def ledger_figures(state_url: str, pipeline: str) -> dict[str, Any]:
    """Incidents, open incidents, actions per kind and recovery times from a seed's ledger."""
    store = StateStore(state_url)
    try:
        rows = Ledger(store).incidents(pipeline=pipeline, limit=100_000)
    finally:
        store.close()
    actions: Counter[str] = Counter(a["action"] for r in rows for a in r["actions"])
    recover = tuple(round(float(r["recovered_at"]) - float(r["detected_at"]), 3)
                    for r in rows if r["recovered_at"] is not None)
    still_open = sum(1 for r in rows if r["status"] != "healed")
    return {"incidents": len(rows), "open_incidents": still_open,
            "actions": dict(sorted(actions.items())), "recover_s": recover}


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (``share`` in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChaosReport:
    """Every seed's report and the summary; ``failed`` decides the exit code."""

    pipeline: str
    destination: str
    kinds: tuple[str, ...]
    reference: dict[str, Any]
    seeds: tuple[SeedReport, ...]
    summary: dict[str, Any]

    @classmethod
    def of(
        cls, pipeline: str, destination: str, kinds: Sequence[str], reference: Digest,
        batches: int, seeds: Sequence[SeedReport], *, wall_s: float,
    ) -> ChaosReport:
        """Sum up ``seeds``."""
        faults: Counter[str] = Counter()
        for seed in seeds:
            faults.update(seed.injected)
        recover = [s for seed in seeds for s in seed.recover_s]
        summary = {
            "seeds": len(seeds),
            "discrepancies": sum(1 for s in seeds if not s.ok),
            "faults": {k: faults.get(k, 0) for k in kinds},
            "never_injected": [k for k in kinds if not faults.get(k)],
            "incidents": sum(s.incidents for s in seeds),
            "recovered": len(recover),
            "mttr_p50_s": percentile(recover, 0.5),
            "mttr_p95_s": percentile(recover, 0.95),
            "escalations": sum(s.pages for s in seeds),
            "expected_escalations": faults.get("permanent", 0),
            "kills": sum(s.kills for s in seeds),
            "wall_s": round(wall_s, 2),
        }
        ref = {"rows": reference.rows, "dead_letters": sum(reference.dead.values()),
               "batches": batches, "content": reference.content}
        return cls(pipeline=pipeline, destination=destination, kinds=tuple(kinds),
                   reference=ref, seeds=tuple(seeds), summary=summary)

    @property
    def failed(self) -> bool:
        """A seed differed from the reference, or a requested fault kind never fired."""
        return bool(self.summary["discrepancies"] or self.summary["never_injected"])

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"pipeline": self.pipeline, "destination": self.destination,
                "kinds": list(self.kinds), "reference": self.reference,
                "seeds": [s.as_dict() for s in self.seeds], "summary": self.summary,
                "failed": self.failed}

    def render(self) -> str:
        """The summary as text, with every seed that failed."""
        s = self.summary
        lines = [
            f"{self.pipeline} into {self.destination}: {s['seeds']} seeds, "
            f"{s['discrepancies']} discrepancies, {s['kills']} kills, {s['escalations']} pages "
            f"(expected {s['expected_escalations']}), in {s['wall_s']:.1f}s",
            f"reference: {self.reference['rows']} rows, {self.reference['dead_letters']} dead "
            f"letters, {self.reference['batches']} batches",
            "faults injected: " + ", ".join(f"{k} {n}" for k, n in s["faults"].items()),
            f"incidents: {s['incidents']}, recovered {s['recovered']}; MTTR p50 "
            f"{_secs(s['mttr_p50_s'])}, p95 {_secs(s['mttr_p95_s'])} (virtual clock)",
        ]
        if s["never_injected"]:
            lines.append("never injected: " + ", ".join(s["never_injected"]))
        for seed in self.seeds:
            for problem in seed.problems:
                lines.append(f"seed {seed.seed}: {problem}")
        lines.append("FAILED" if self.failed else "OK")
        return "\n".join(lines)

    def seed_line(self, seed: SeedReport) -> str:
        """One line per seed, for progress."""
        return _seed_line(seed)


def _seed_line(seed: SeedReport) -> str:
    faults = ", ".join(f"{k} {n}" for k, n in seed.injected.items()) or "none"
    verdict = "ok" if seed.ok else "DIFFERS"
    return (f"seed {seed.seed}: {verdict}; injected {faults}; {seed.incidents} incidents, "
            f"{seed.pages} pages, attempts {list(seed.exits)} in {seed.wall_s:.2f}s")


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"
