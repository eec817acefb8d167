"""The one exception hierarchy of mendflow.

Every class says whether retrying can help (``retryable``), and every message ends with what to
do. Driver errors (DuckDB, httpx, OS) are translated where they enter mendflow and raised ``from``
the original, so the cause stays on the traceback and diagnosis never matches message text.

::

    MendflowError                      root; never raised itself
    ├── ConfigError                    the pipeline or command is wrong      (user error, exit 2)
    │   └── UnknownPipeline            no pipeline of that name is served
    ├── TransientError                 retryable: network blip, 5xx, timeout, lock conflict
    │   ├── SourceUnavailable          a source cannot be reached right now
    │   ├── RateLimited                429, or 503 with Retry-After: wait as told, then retry
    │   ├── DestinationUnavailable     the destination is locked, down or unreachable right now
    │   ├── DependencyDown             its circuit breaker is open: calls fail fast until it probes
    │   ├── PipelineBusy               another worker holds the pipeline's lease right now
    │   └── ResourceExhausted          out of memory or a statement too large: shrink and retry
    ├── PermanentError                 not retryable: retrying gives the same answer
    │   ├── SourceRejected             a source answered 4xx
    │   ├── SchemaMismatch             data does not fit the declared or destination schema
    │   ├── BadData                    a batch that cannot load as a whole: quarantine it
    │   │   └── CheckFailed            a blocking audit failed; the batch was rolled back
    │   ├── TransformError             a transform raised; the batch was not loaded
    │   └── DestinationError           the destination refused the write
    └── Interrupted                    the run was stopped on purpose (not retried)
"""

from __future__ import annotations


class MendflowError(Exception):
    """Root of every error mendflow raises.

    ``dependency`` names what failed (a URL, a file, a database); ``status`` is a protocol
    status such as an HTTP code, when there is one. Diagnosis reads these, never the message.
    """

    retryable: bool = False
    exit_code: int = 1

    def __init__(self, message: str, *, dependency: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.dependency = dependency
        self.status = status
        #: The batch being prepared or written when the error was raised ("" outside a batch),
        #: and at which stage ("prepare" or "write"); the runner fills these in.
        self.batch_id = ""
        self.stage = ""


class ConfigError(MendflowError):
    """The pipeline definition or the command line is wrong; fixing it is the user's move."""

    exit_code = 2


class UnknownPipeline(ConfigError):
    """No pipeline of that name is loaded; ``pipeline`` is the name asked for."""

    def __init__(self, pipeline: str, known: list[str] | tuple[str, ...] = ()) -> None:
        names = ", ".join(sorted(known)) or "none"
        super().__init__(f"no pipeline named {pipeline!r} is served (known: {names}); "
                         "check the name or the pipeline folder.")
        self.pipeline = pipeline


class TransientError(MendflowError):
    """A failure that may pass by itself; retrying with backoff is the right move.

    ``retry_after_s`` is how long the dependency asked us to wait (Retry-After, an open breaker),
    when it said; retrying waits that long instead of backing off.
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        dependency: str = "",
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, dependency=dependency, status=status)
        self.retry_after_s = retry_after_s


class SourceUnavailable(TransientError):
    """A source did not answer (refused connection, timeout, 5xx)."""


class RateLimited(TransientError):
    """The dependency asked us to slow down; ``retry_after_s`` is how long it asked us to wait."""


class DestinationUnavailable(TransientError):
    """The destination cannot take the write right now (locked by another process, down)."""


class DependencyDown(TransientError):
    """The circuit breaker is open; ``retry_after_s`` is when it lets a probe through."""


class PipelineBusy(TransientError):
    """The pipeline is being run (or replayed) by a worker that holds its lease; try again when
    that job ends."""


class ResourceExhausted(TransientError):
    """Memory or a size limit ran out; a smaller batch may pass."""


class PermanentError(MendflowError):
    """A failure that retrying will not fix."""


class SourceRejected(PermanentError):
    """A source answered with a client error (4xx other than 408/429)."""


class SchemaMismatch(PermanentError):
    """The data does not fit the schema it must be loaded into."""


class BadData(PermanentError):
    """Records that cannot be loaded as they are; they belong in quarantine, not in a retry."""


class CheckFailed(BadData):
    """A blocking check failed on a batch: it was rolled back, nothing of it published.

    ``check`` names the check.
    """

    def __init__(self, message: str, *, check: str, dependency: str = "") -> None:
        super().__init__(message, dependency=dependency)
        self.check = check


class TransformError(PermanentError):
    """A transform raised; fix the transform, then run again: the batch was not loaded."""


class DestinationError(PermanentError):
    """The destination refused the write for a reason retrying will not change."""


class Interrupted(MendflowError):
    """The run was stopped on purpose (Ctrl-C, SIGTERM); it resumes from its checkpoint."""

    exit_code = 130
