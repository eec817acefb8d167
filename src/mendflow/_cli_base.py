"""What every ``mendflow`` command group shares: errors as one paragraph and an exit code.

Exit codes: 0 success; 1 a run failed; 2 a user error (bad file, bad option); 130 interrupted.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import click

from mendflow.exceptions import MendflowError


class Commands(click.Group):
    """Turns mendflow errors into one clear paragraph and the right exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MendflowError as exc:
            fail(f"error: {exc}", exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted; the next run resumes from the last committed batch.", 130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - last line of defence: a bug, said plainly
            if os.environ.get("MENDFLOW_DEBUG"):
                traceback.print_exc()
            fail(
                f"internal error: {type(exc).__name__}: {exc}. This is a bug in mendflow; "
                "set MENDFLOW_DEBUG=1 to print the traceback and report it.",
                1,
            )


def fail(message: str, code: int) -> None:
    """Print ``message`` to stderr and exit with ``code``."""
    click.echo(message, err=True)
    sys.exit(code)


