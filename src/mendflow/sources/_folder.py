"""The files a pattern names: which exist and have settled, what each is known by, its format.

A file is known by its path under the pattern's folder (the part before the first wildcard) and
its fingerprint (size and modification time); its format comes from its suffix (``.gz`` aside).
"""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path

from mendflow.exceptions import ConfigError

FORMATS = ("jsonl", "csv", "parquet")
_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def matching(pattern: str, *, min_age_s: float) -> list[str]:
    """The files ``pattern`` names, sorted, leaving out those modified less than ``min_age_s``
    ago; a missing file or folder is a configuration error."""
    if not glob.has_magic(pattern):
        if not os.path.isfile(pattern):
            raise ConfigError(
                f"file not found: {pattern}; check the path (relative paths start "
                f"from {os.getcwd()})."
            )
        return [pattern]
    folder = base_folder(pattern)
    if not os.path.isdir(folder):
        raise ConfigError(
            f"folder not found: {folder} (from pattern {pattern}); create it or fix the pattern."
        )
    settled = time.time() - min_age_s
    return sorted(
        p
        for p in glob.glob(pattern, recursive=True)
        if os.path.isfile(p) and (not min_age_s or os.path.getmtime(p) <= settled)
    )


def base_folder(pattern: str) -> str:
    """The folder part of ``pattern`` before its first wildcard."""
    if not glob.has_magic(pattern):
        return os.path.dirname(pattern) or "."
    parts = Path(pattern).parts
    fixed = list(parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))])
    return str(Path(*fixed)) if fixed else "."


def fingerprint(path: str) -> str:
    """The file's size and modification time: a change in either makes it a new file."""
    stat = os.stat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def format_of(path: str) -> str:
    """The format ``path``'s suffix names (``.gz`` aside)."""
    suffix = suffix_of(path)
    if suffix not in _SUFFIXES:
        raise ConfigError(
            f"cannot tell the format of {path}; set `format:` to one of {', '.join(FORMATS)}."
        )
    return _SUFFIXES[suffix]


def suffix_of(path: str) -> str:
    """``path``'s suffix in lower case, ``.gz`` aside (``.json`` for ``a.json.gz``)."""
    name = path[:-3] if path.endswith(".gz") else path
    return Path(name).suffix.lower()
