"""``python -m mendflow`` is the ``mendflow`` command."""

from mendflow.cli import main

main()
