"""Retrying a block with exponential backoff and full jitter, in sync or async code.

    for attempt in retrying(Retry(attempts=5), dependency="orders-api"):
        with attempt:
            response = client.get(url)

    async for attempt in retrying_async(Retry(attempts=5), dependency="orders-api"):
        with attempt:
            response = await client.get(url)

Only errors marked retryable (``TransientError`` and its subclasses) are retried; anything else,
and ``BaseException`` such as cancellation, leaves at once. When the attempts or the deadline run
out, the last real error is raised as it was, not wrapped. An error may carry ``retry_after_s``
(from an HTTP Retry-After header); that wait replaces the backoff, and 0 means retry at once. A
wait that would pass the deadline is not taken. With a shared ``RetryBudget`` every first attempt
earns a share of a retry, and a retry the budget refuses is not made: the error is raised.

Both loops ask one function, ``_delay_or_raise``, whether and when to retry; they differ only in
how they wait (``clock.sleep`` or ``await sleep``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

from mendflow.clock import SYSTEM_CLOCK, Clock
from mendflow.events import Recovered, RetryScheduled, emit_in_run
from mendflow.exceptions import MendflowError
from mendflow.resilience.budget import RetryBudget


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """How to retry: attempts in all, backoff base and cap, and a total deadline (seconds)."""

    attempts: int = 5
    base_s: float = 0.2
    cap_s: float = 10.0
    deadline_s: float = 120.0

    def backoff_s(self, failures: int, draw: Callable[[], float] = random.random) -> float:
        """Full-jitter delay after failure number ``failures``: uniform in
        [0, min(cap, base * 2 ** (failures - 1)))."""
        return draw() * min(self.cap_s, self.base_s * 2.0 ** min(failures - 1, 64))


NO_RETRY = Retry(attempts=1)


class Attempt:
    """One try; a context manager that keeps a retryable error for the loop to judge."""

    __slots__ = ("error", "number")

    def __init__(self, number: int) -> None:
        self.number = number
        self.error: MendflowError | None = None

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if isinstance(exc, MendflowError) and exc.retryable:
            self.error = exc
            return True
        return False


def retrying(
    policy: Retry,
    *,
    dependency: str,
    clock: Clock = SYSTEM_CLOCK,
    draw: Callable[[], float] = random.random,
    budget: RetryBudget | None = None,
) -> Iterator[Attempt]:
    """Yield attempts until one succeeds; raise the last error when retrying must stop."""
    if budget is not None:
        budget.deposit()
    started = clock.monotonic()
    attempt = Attempt(1)
    while True:
        yield attempt
        error = attempt.error
        if error is None:
            if attempt.number > 1:
                emit_in_run(Recovered, dependency=dependency, attempts=attempt.number)
            return
        delay = _delay_or_raise(
            error, attempt.number, policy, started, clock, draw, budget, dependency
        )
        if delay > 0:
            clock.sleep(delay)
        attempt = Attempt(attempt.number + 1)


def retrying_async(
    policy: Retry,
    *,
    dependency: str,
    clock: Clock = SYSTEM_CLOCK,
    draw: Callable[[], float] = random.random,
    budget: RetryBudget | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[Attempt]:
    """Like ``retrying``, for ``async for``: waits with ``await sleep(seconds)``.

    ``clock`` is read for the deadline only. Cancelling the task while it waits, or a call
    raising ``asyncio.CancelledError``, leaves the loop at once.
    """
    return _AsyncAttempts(policy, dependency, clock, draw, budget, sleep)


class _AsyncAttempts:
    """The async iterator behind ``retrying_async``: a plain object, so an abandoned loop needs
    no asynchronous clean-up, unlike an async generator."""

    __slots__ = (
        "_attempt",
        "_budget",
        "_clock",
        "_dependency",
        "_draw",
        "_policy",
        "_sleep",
        "_started",
    )

    def __init__(
        self,
        policy: Retry,
        dependency: str,
        clock: Clock,
        draw: Callable[[], float],
        budget: RetryBudget | None,
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._policy = policy
        self._dependency = dependency
        self._clock = clock
        self._draw = draw
        self._budget = budget
        self._sleep = sleep
        self._attempt: Attempt | None = None
        self._started = 0.0

    def __aiter__(self) -> _AsyncAttempts:
        return self

    async def __anext__(self) -> Attempt:
        attempt = self._attempt
        if attempt is None:
            if self._budget is not None:
                self._budget.deposit()
            self._started = self._clock.monotonic()
            self._attempt = Attempt(1)
            return self._attempt
        error = attempt.error
        if error is None:
            if attempt.number > 1:
                emit_in_run(Recovered, dependency=self._dependency, attempts=attempt.number)
            raise StopAsyncIteration
        delay = _delay_or_raise(
            error,
            attempt.number,
            self._policy,
            self._started,
            self._clock,
            self._draw,
            self._budget,
            self._dependency,
        )
        if delay > 0:
            await self._sleep(delay)
        self._attempt = Attempt(attempt.number + 1)
        return self._attempt


def _delay_or_raise(
    error: MendflowError,
    failures: int,
    policy: Retry,
    started: float,
    clock: Clock,
    draw: Callable[[], float],
    budget: RetryBudget | None,
    dependency: str,
) -> float:
    """Seconds to wait before retrying after failure number ``failures``; raise ``error`` when
    the attempts, the deadline or the budget say stop. Emits the retry it schedules."""
    after: float | None = getattr(error, "retry_after_s", None)
    delay = policy.backoff_s(failures, draw) if after is None else max(0.0, after)
    spent = clock.monotonic() - started
    if failures >= policy.attempts or spent + delay > policy.deadline_s:
        raise error
    if budget is not None and not budget.try_withdraw():
        error.add_note(
            f"mendflow: not retried: the retry budget of {dependency!r} is spent, so it is "
            "failing for many calls; check the dependency, or raise the budget's ratio."
        )
        raise error
    emit_in_run(
        RetryScheduled,
        dependency=dependency,
        attempt=failures,
        delay_s=round(delay, 6),
        error=str(error),
        error_type=type(error).__name__,
        status=error.status,
    )
    return delay
