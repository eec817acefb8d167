"""What the injectors of one chaos run counted and injected, kept across its restarts.

A journal is an append-only file of JSON lines (or only memory, without a path). Each line is
written and flushed before the fault it records takes effect, so a SIGKILL never makes a fault
fire twice or a count go back. A restarted process opens the same file and goes on from there.

    journal = Journal(Path("seed-7/journal.jsonl"))
    n = journal.count("pull")                   # 1, 2, 3... across restarts
    if not journal.fired(fault.id):
        journal.fire(fault.id, fault.kind)      # counted in journal.injected()
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["Journal"]


class Journal:
    """Counters, fired faults, batch ordinals, notes and the virtual clock's offset."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._fired: dict[str, str] = {}
        self._ordinals: dict[str, int] = {}
        self.notes: list[tuple[str, dict[str, Any]]] = []
        self.offset_s = 0.0
        if path is not None and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    self._apply(json.loads(line))

    def count(self, name: str) -> int:
        """Add one to the counter ``name``; its new value."""
        with self._lock:
            self._write({"op": "count", "name": name})
            return self._counts[name]

    def value(self, name: str) -> int:
        """The counter ``name`` as it stands."""
        with self._lock:
            return self._counts[name]

    def fired(self, fault_id: str) -> bool:
        """Whether the fault ``fault_id`` has fired."""
        with self._lock:
            return fault_id in self._fired

    def fire(self, fault_id: str, kind: str) -> None:
        """Record that the fault fired (once); it counts as one injection of ``kind``."""
        with self._lock:
            if fault_id not in self._fired:
                self._write({"op": "fire", "id": fault_id, "kind": kind})

    def ordinal(self, batch_id: str) -> int:
        """The batch's ordinal: 1 for the first batch id ever read, 2 for the next new one."""
        with self._lock:
            if batch_id not in self._ordinals:
                self._write({"op": "ordinal", "batch": batch_id})
            return self._ordinals[batch_id]

    def note(self, topic: str, /, **data: Any) -> None:
        """Keep a fact about ``topic`` for the report (corrupted keys, pages sent...)."""
        with self._lock:
            self._write({"op": "note", "topic": topic, "data": data})

    def advance(self, seconds: float) -> float:
        """Move the virtual clock on by ``seconds``; the new offset."""
        with self._lock:
            self._write({"op": "offset", "value": self.offset_s + seconds})
            return self.offset_s

    def injected(self) -> Counter[str]:
        """Faults fired, per kind."""
        with self._lock:
            return Counter(self._fired.values())

    def noted(self, topic: str) -> list[dict[str, Any]]:
        """The notes about ``topic``, in order."""
        with self._lock:
            return [data for t, data in self.notes if t == topic]

    def _write(self, entry: dict[str, Any]) -> None:
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(entry) + "\n")
        self._apply(entry)

    def _apply(self, entry: dict[str, Any]) -> None:
        op = entry["op"]
        if op == "count":
            self._counts[entry["name"]] += 1
        elif op == "fire":
            self._fired[entry["id"]] = entry["kind"]
        elif op == "ordinal":
            self._ordinals[entry["batch"]] = len(self._ordinals) + 1
        elif op == "note":
            self.notes.append((entry["topic"], entry["data"]))
        elif op == "offset":
            self.offset_s = float(entry["value"])
