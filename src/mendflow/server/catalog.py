"""The pipelines a service runs: every ``*.yaml``/``*.yml`` file of the folders and files named.

    catalog = Catalog.load(["pipelines/"])
    catalog.names()                  # ["orders", "store_drops"]
    spec = catalog.get("orders")     # a fresh PipelineFile, read again from its file

The catalog keeps each pipeline's file path and what the service needs without building the
pipeline (schedule, freshness, maintenance windows); ``get`` reads the file again so that a run
always uses a new destination object and the file as it is now. Two files declaring the same
pipeline name are refused, as are pipelines naming different state stores.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mendflow import config
from mendflow.config import PipelineFile
from mendflow.exceptions import ConfigError, UnknownPipeline
from mendflow.schedule import Schedule, Window


@dataclass(frozen=True, slots=True)
class Entry:
    """One pipeline of the catalog: where it is declared and how the service treats it."""

    name: str
    path: Path
    schedule: Schedule | None
    freshness_s: float | None
    maintenance: tuple[Window, ...]
    state: str | None


class Catalog:
    """Pipelines by name, loaded from YAML files."""

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self._entries: dict[str, Entry] = {}
        for entry in entries:
            first = self._entries.get(entry.name)
            if first is not None:
                raise ConfigError(
                    f"pipeline {entry.name!r} is declared twice, in {first.path} and "
                    f"{entry.path}; give each pipeline its own name."
                )
            self._entries[entry.name] = entry

    @classmethod
    def load(cls, paths: Sequence[str | os.PathLike[str]]) -> Catalog:
        """Every pipeline file in ``paths`` (folders are searched for ``*.yaml`` and ``*.yml``,
        not recursively)."""
        files: list[Path] = []
        for item in paths:
            path = Path(item)
            if path.is_dir():
                files.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
            elif path.exists():
                files.append(path)
            else:
                raise ConfigError(f"pipeline file or folder not found: {path}; check the path.")
        return cls(_entry(config.load(f)) for f in files)

    def names(self) -> list[str]:
        """Pipeline names, sorted."""
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        """Every entry, sorted by name."""
        return [self._entries[name] for name in self.names()]

    def entry(self, name: str) -> Entry:
        """The entry of ``name``; ``UnknownPipeline`` if there is none."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownPipeline(name, self.names()) from None

    def get(self, name: str) -> PipelineFile:
        """The pipeline ``name``, built afresh from its file."""
        return config.load(self.entry(name).path)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def state(self) -> str | None:
        """The state store URL the pipelines name (None if none does); ``ConfigError`` if they
        name different ones."""
        named = {e.state for e in self._entries.values() if e.state}
        if len(named) > 1:
            raise ConfigError(
                "the pipelines name different state stores; one service needs one store: pass "
                "--state URL (or set MENDFLOW_STATE_URL) and use the same `state:` everywhere."
            )
        return next(iter(named), None)


def _entry(spec: PipelineFile) -> Entry:
    return Entry(
        name=spec.pipeline.name, path=spec.path, schedule=spec.schedule,
        freshness_s=spec.freshness_s, maintenance=spec.maintenance, state=spec.state,
    )


__all__: Sequence[str] = ("Catalog", "Entry")
