"""The checker: does a seed's destination hold what the reference holds, fault for fault?

- the run finished (after at most the allowed restarts);
- the rows, over the reference's columns, hash alike, except rows whose key an injected
  corruption touched (those must be dead letters, not rows);
- every key of the reference is in the table, or was corrupted; no key is new;
- the dead letters are the reference's, plus exactly one per corrupted record (by the digest of
  its bytes, where the injector knew them);
- a schema change left its column, with values;
- pages: one per injected permanent fault, none otherwise; no incident left open.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mendflow.chaos.journal import Journal
from mendflow.chaos.plan import PERMANENT, FaultPlan
from mendflow.chaos.source import NEW_COLUMN

if TYPE_CHECKING:
    from mendflow.chaos.runner import _Setup

__all__ = ["problems_of"]


def problems_of(
    setup: _Setup, dest: Mapping[str, Any], journal: Journal, exits: Sequence[int],
    plan: FaultPlan,
) -> tuple[list[str], int]:
    """What is wrong with a seed's outcome (nothing: an empty list), and how many records the
    injected corruption touched."""
    problems: list[str] = []
    if exits[-1] != 0:
        problems.append(f"the run did not finish: attempts exited {list(exits)}")
    notes = journal.noted("corrupted")
    keys = [str(k) for note in notes for k in note["keys"]]
    records = [r for note in notes for r in note["records"]]
    originals = Counter(o for note in notes for o in note.get("originals", []) if o)
    reference, target = setup.reference, setup.target
    try:
        expected = reference if not keys else target.digest(
            setup.ref_spec, key=setup.key, columns=reference.columns, excluded=keys)
        got = target.digest(dest, key=setup.key, columns=reference.columns, excluded=keys)
    except Exception as exc:  # noqa: BLE001 - a destination the run left unreadable is a finding
        problems.append(f"cannot read the destination: {type(exc).__name__}: {exc}")
        return problems, len(keys)
    if (got.rows, got.content) != (expected.rows, expected.content):
        problems.append(f"rows differ from the reference: {got.rows} rows (hash "
                        f"{got.content[:8]}) where the reference has {expected.rows} "
                        f"({expected.content[:8]}), {len(keys)} corrupted keys left out")
    missing = reference.keys - got.keys - set(keys)
    unexpected = got.keys - reference.keys
    if missing or unexpected:
        problems.append(f"keys: {len(missing)} missing (e.g. {sorted(missing)[:3]}), "
                        f"{len(unexpected)} unexpected (e.g. {sorted(unexpected)[:3]})")
    problems += _dead_letter_problems(reference.dead, got.dead, records, originals)
    injected = journal.injected()
    if injected.get("schema_change") and got.new_column <= 0:
        problems.append(f"the schema change's column {NEW_COLUMN!r} is missing or empty")
    pages = sum(1 for p in journal.noted("page") if p["kind"] == "escalated")
    due = sum(n for kind, n in injected.items() if kind in PERMANENT)
    if pages != due:
        problems.append(f"paged {pages} times where {due} permanent faults were injected")
    return problems, len(keys)


def _dead_letter_problems(
    reference: Counter[str], got: Counter[str], records: Sequence[str | None],
    originals: Counter[str],
) -> list[str]:
    """The reference's dead letters must all be there (but those the chaos rewrote: a bad
    record corrupted again), plus one per corrupted record, by its bytes where known."""
    problems: list[str] = []
    expected = (reference - (reference & originals)) + Counter(r for r in records if r)
    unknown = sum(1 for r in records if r is None)
    lost, extra = expected - got, got - expected
    if lost:
        problems.append(f"{sum(lost.values())} expected dead letters are missing (the "
                        "reference's, or corrupted records)")
    if sum(extra.values()) != unknown:
        problems.append(f"{sum(extra.values())} dead letters beyond the reference's and the "
                        f"{len(records)} corrupted records")
    return problems
