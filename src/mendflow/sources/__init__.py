"""Built-in sources: files on disk, HTTP JSON APIs, and fallback tiers over them."""

from mendflow.sources.fallback import PROVENANCE_KEY, FallbackSource, provenance
from mendflow.sources.files import FileSource
from mendflow.sources.http import HttpSource, Pagination
from mendflow.sources.snapshot import Snapshot, SnapshotSource, SnapshotStore

__all__ = [
    "PROVENANCE_KEY",
    "FallbackSource",
    "FileSource",
    "HttpSource",
    "Pagination",
    "Snapshot",
    "SnapshotSource",
    "SnapshotStore",
    "provenance",
]
