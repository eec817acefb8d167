"""Run a YAML pipeline, optionally SIGKILLing itself at the nth event of a kind.

    python tests/crash_child.py PIPELINE.yaml STATE_URL [KIND NTH]
"""

from __future__ import annotations

import sys

from mendflow import config
from mendflow.chaos import KillAt
from mendflow.typing import Hook


def main(argv: list[str]) -> None:
    spec = config.load(argv[1])
    hooks: list[Hook] = [KillAt(argv[3], int(argv[4]))] if len(argv) > 3 else []
    spec.pipeline.run(hooks=hooks, state=argv[2])


if __name__ == "__main__":
    main(sys.argv)
