"""Retrying a block, sync and async: full-jitter backoff, Retry-After, deadline, retry budget,
and what is never retried."""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from mendflow import (
    ConfigError,
    PermanentError,
    RateLimited,
    Retry,
    SourceUnavailable,
    retrying,
)
from mendflow.events import Hooks, RunContext, bind_run, unbind_run
from mendflow.resilience.budget import RetryBudget
from mendflow.resilience.retry import retrying_async
from mendflow.testing import EventLog, FakeClock


def _flaky(
    failures: list[Exception], clock: FakeClock, policy: Retry, draw: float = 0.5
) -> int:
    calls = 0
    for attempt in retrying(policy, dependency="api", clock=clock, draw=lambda: draw):
        with attempt:
            calls += 1
            if failures:
                raise failures.pop(0)
    return calls


def test_full_jitter_delays_stay_within_the_capped_exponential_bound() -> None:
    """Each delay is in [0, min(cap, base * 2^(n-1))] and spans that range."""
    policy = Retry(base_s=0.1, cap_s=1.0)
    for n in range(1, 8):
        bound = min(1.0, 0.1 * 2 ** (n - 1))
        assert policy.backoff_s(n, lambda: 0.0) == 0.0
        assert policy.backoff_s(n, lambda: 0.999999) == pytest.approx(bound, rel=1e-5)


def test_retries_until_success_sleeping_only_on_the_fake_clock() -> None:
    """Two transient failures then success: three calls, two sleeps, the clock moved."""
    clock = FakeClock()
    failures: list[Exception] = [SourceUnavailable("down"), SourceUnavailable("down")]
    calls = _flaky(failures, clock, Retry(attempts=5, base_s=0.2))
    assert calls == 3
    assert clock.sleeps == [pytest.approx(0.1), pytest.approx(0.2)]


def test_a_zero_delay_does_not_sleep() -> None:
    """When jitter draws zero, the next attempt follows at once, with no sleep call."""
    clock = FakeClock()
    assert _flaky([SourceUnavailable("down")], clock, Retry(), draw=0.0) == 2
    assert clock.sleeps == []


def test_retry_after_wins_over_backoff() -> None:
    """A rate limit's Retry-After is the wait, whatever backoff would say."""
    clock = FakeClock()
    _flaky([RateLimited("slow down", retry_after_s=7.0)], clock, Retry(base_s=0.01))
    assert clock.sleeps == [7.0]


def test_permanent_errors_are_tried_once_and_raised_as_they_are() -> None:
    """A 4xx-like error is not retried, and the caller sees the original exception."""
    clock = FakeClock()
    error = PermanentError("401")
    with pytest.raises(PermanentError) as caught:
        _flaky([error], clock, Retry(attempts=5))
    assert caught.value is error
    assert clock.sleeps == []


def test_the_last_error_is_raised_when_attempts_run_out() -> None:
    """After the final attempt the real error surfaces, not a wrapper."""
    errors: list[Exception] = [SourceUnavailable(f"down {i}") for i in range(3)]
    last = errors[-1]
    with pytest.raises(SourceUnavailable) as caught:
        _flaky(errors, FakeClock(), Retry(attempts=3))
    assert caught.value is last


def test_the_deadline_is_never_overshot_by_a_sleep() -> None:
    """A wait that would pass the deadline is not taken; the error is raised instead."""
    clock = FakeClock()
    with pytest.raises(RateLimited):
        _flaky([RateLimited("x", retry_after_s=4.0)] * 3, clock, Retry(deadline_s=10.0))
    assert sum(clock.sleeps) <= 10.0
    assert clock.sleeps == [4.0, 4.0]


def _attempt_raising(error: BaseException, clock: FakeClock, calls: list[int]) -> None:
    for attempt in retrying(Retry(attempts=5), dependency="api", clock=clock):
        with attempt:
            calls.append(1)
            raise error


@pytest.mark.parametrize("error", [asyncio.CancelledError(), KeyboardInterrupt()])
def test_cancellation_propagates_at_once(error: BaseException) -> None:
    """CancelledError and KeyboardInterrupt are never swallowed or retried."""
    clock = FakeClock()
    calls: list[int] = []
    with pytest.raises(type(error)):
        _attempt_raising(error, clock, calls)
    assert (len(calls), clock.sleeps) == (1, [])


def test_retries_and_recovery_are_emitted_as_events_of_the_run() -> None:
    """Inside a run, each retry and the recovery become events carrying the error."""
    log = EventLog()
    clock = FakeClock()
    token = bind_run(RunContext("r1", "p", Hooks([log]), clock.now))
    try:
        _flaky([SourceUnavailable("blip")], clock, Retry(attempts=3))
    finally:
        unbind_run(token)
    assert log.kinds() == ["retry.scheduled", "retry.recovered"]
    assert log[0].payload()["error_type"] == "SourceUnavailable"


def test_a_zero_retry_after_retries_at_once_without_sleeping() -> None:
    """Retry-After: 0 means retry now: no backoff is drawn and no sleep is called."""
    clock = FakeClock()
    assert _flaky([RateLimited("slow down", retry_after_s=0.0)], clock, Retry(base_s=5.0)) == 2
    assert clock.sleeps == []


@pytest.mark.parametrize("failures", range(1, 7))
def test_full_jitter_delays_average_half_their_bound(failures: int) -> None:
    """Over 10,000 seeded draws the mean delay is within 5 % of half the capped bound."""
    policy = Retry(base_s=0.2, cap_s=5.0)
    bound = min(policy.cap_s, policy.base_s * 2 ** (failures - 1))
    draw = random.Random(1234 + failures).random
    delays = [policy.backoff_s(failures, draw) for _ in range(10_000)]
    assert all(0.0 <= delay <= bound for delay in delays)
    assert statistics.fmean(delays) == pytest.approx(bound / 2, rel=0.05)


# ---------------------------------------------------------------------------------------------
# Retry budget


def _failing_call(clock: FakeClock, budget: RetryBudget | None, tries: list[int]) -> None:
    for attempt in retrying(
        Retry(attempts=5), dependency="api", clock=clock, draw=lambda: 0.0, budget=budget
    ):
        with attempt:
            tries.append(1)
            raise SourceUnavailable("down")


def _storm(clock: FakeClock, budget: RetryBudget | None, calls: int = 1000) -> int:
    """Make ``calls`` always-failing calls of 5 attempts, 10 ms apart; return the retries made."""
    tries: list[int] = []
    for _ in range(calls):
        clock.advance(0.01)
        with pytest.raises(SourceUnavailable):
            _failing_call(clock, budget, tries)
    return len(tries) - calls


def test_a_budget_caps_retries_in_a_failure_storm() -> None:
    """1,000 failing calls retry about ratio x calls + the floor, not 4,000 times."""
    assert _storm(FakeClock(), None) == 4000
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_s=1.0, clock=clock)
    retries = _storm(clock, budget)
    elapsed_s = clock.monotonic()
    assert elapsed_s == pytest.approx(10.0)
    assert 190 <= retries <= 0.2 * 1000 + 1.0 * elapsed_s + 2


def test_a_spent_budget_never_blocks_first_attempts() -> None:
    """With no tokens left every call still gets its first attempt, and succeeds if it can."""
    clock = FakeClock()
    budget = RetryBudget(min_per_s=0.0, clock=clock)
    assert not budget.try_withdraw()
    for _ in range(50):
        calls = 0
        for attempt in retrying(Retry(), dependency="api", clock=clock, budget=budget):
            with attempt:
                calls += 1
        assert calls == 1


def test_a_refused_retry_raises_the_last_error_at_once_and_emits_nothing() -> None:
    """When the budget refuses, the error is raised as it is, unslept and without events."""
    log = EventLog()
    clock = FakeClock()
    budget = RetryBudget(min_per_s=0.0, clock=clock)
    error = SourceUnavailable("down")
    token = bind_run(RunContext("r1", "p", Hooks([log]), clock.now))
    try:
        with pytest.raises(SourceUnavailable) as caught:
            _attempt_raising_with_budget(error, clock, budget)
    finally:
        unbind_run(token)
    assert caught.value is error
    assert (log.kinds(), clock.sleeps) == ([], [])
    assert "retry budget" in " ".join(error.__notes__)


def _attempt_raising_with_budget(error: Exception, clock: FakeClock, budget: RetryBudget) -> None:
    for attempt in retrying(Retry(), dependency="api", clock=clock, budget=budget):
        with attempt:
            raise error


def test_a_quiet_dependency_still_gets_min_per_s_retries() -> None:
    """With no first attempts at all, the floor allows min_per_s retries a second."""
    clock = FakeClock()
    budget = RetryBudget(min_per_s=5.0, clock=clock)
    allowed = 0
    for _ in range(1000):
        clock.advance(0.01)
        allowed += budget.try_withdraw()
    assert 5 * 10 <= allowed <= 5 * 10 + 5  # 10 s at 5/s, plus the floor's full start


def test_a_quiet_dependency_that_fails_now_and_then_is_retried_each_time() -> None:
    """Calls 2 s apart, each failing once: every one is retried and recovers."""
    clock = FakeClock()
    budget = RetryBudget(clock=clock)
    for _ in range(20):
        clock.advance(2.0)
        calls = 0
        for attempt in retrying(Retry(), dependency="api", clock=clock, budget=budget):
            with attempt:
                calls += 1
                if calls == 1:
                    raise SourceUnavailable("blip")
        assert calls == 2


def test_budget_deposits_expire_and_cap_at_max_tokens() -> None:
    """Tokens stop at max_tokens and decay with time constant ttl_s until none is left."""
    clock = FakeClock()
    budget = RetryBudget(ratio=1.0, min_per_s=0.0, max_tokens=5.0, ttl_s=10.0, clock=clock)
    for _ in range(8):
        budget.deposit()
    assert budget.tokens() == 5.0
    clock.advance(10.0)
    assert budget.tokens() == pytest.approx(5.0 / math.e)
    clock.advance(40.0)
    assert not budget.try_withdraw()


def test_budget_withdrawals_are_exact_under_threads() -> None:
    """Eight threads depositing then withdrawing at once get exactly the tokens deposited."""
    budget = RetryBudget(ratio=0.5, min_per_s=0.0, max_tokens=1e6, clock=FakeClock())
    granted: list[int] = []

    def deposit() -> None:
        for _ in range(5000):
            budget.deposit()

    def withdraw() -> None:
        granted.append(sum(budget.try_withdraw() for _ in range(3000)))

    for work in (deposit, withdraw):
        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sum(granted) == 8 * 5000 * 0.5


@pytest.mark.parametrize(
    "settings",
    [
        {"ratio": -0.1},
        {"ratio": math.nan},
        {"min_per_s": -1.0},
        {"max_tokens": 0.5},
        {"ttl_s": 0.0},
        {"ttl_s": math.inf},
    ],
)
def test_budget_rejects_invalid_settings(settings: dict[str, Any]) -> None:
    """Negative, too small or non-finite settings are a ConfigError saying what to give."""
    with pytest.raises(ConfigError, match="give a finite number"):
        RetryBudget(**settings)


# ---------------------------------------------------------------------------------------------
# Async


def _sleeping_on(clock: FakeClock) -> Callable[[float], Awaitable[None]]:
    async def sleep(seconds: float) -> None:
        clock.sleep(seconds)

    return sleep


def _flaky_async(
    failures: list[BaseException],
    clock: FakeClock,
    policy: Retry,
    budget: RetryBudget | None = None,
) -> int:
    calls = 0

    async def run() -> None:
        nonlocal calls
        async for attempt in retrying_async(
            policy,
            dependency="api",
            clock=clock,
            draw=lambda: 0.5,
            budget=budget,
            sleep=_sleeping_on(clock),
        ):
            with attempt:
                calls += 1
                await asyncio.sleep(0)
                if failures:
                    raise failures.pop(0)

    asyncio.run(run())
    return calls


def test_async_retries_until_success() -> None:
    """Two transient failures then success: three calls, two backoff waits on the fake clock."""
    clock = FakeClock()
    failures: list[BaseException] = [SourceUnavailable("down"), SourceUnavailable("down")]
    assert _flaky_async(failures, clock, Retry(attempts=5, base_s=0.2)) == 3
    assert clock.sleeps == [pytest.approx(0.1), pytest.approx(0.2)]


def test_async_retry_after_wins_over_backoff() -> None:
    """A rate limit's Retry-After is the wait in async code too."""
    clock = FakeClock()
    _flaky_async([RateLimited("slow down", retry_after_s=7.0)], clock, Retry(base_s=0.01))
    assert clock.sleeps == [7.0]


def test_async_deadline_is_never_overshot() -> None:
    """A wait that would pass the deadline is not taken; the last real error is raised."""
    clock = FakeClock()
    errors: list[BaseException] = [RateLimited(f"x{i}", retry_after_s=4.0) for i in range(3)]
    last = errors[-1]
    with pytest.raises(RateLimited) as caught:
        _flaky_async(errors, clock, Retry(deadline_s=10.0))
    assert caught.value is last
    assert clock.sleeps == [4.0, 4.0]


def test_async_permanent_errors_are_tried_once() -> None:
    """A permanent error leaves the async loop on the first attempt, unwrapped."""
    clock = FakeClock()
    error = PermanentError("401")
    with pytest.raises(PermanentError) as caught:
        _flaky_async([error], clock, Retry(attempts=5))
    assert caught.value is error
    assert clock.sleeps == []


def test_async_cancellation_raised_by_the_call_propagates_at_once() -> None:
    """A CancelledError from the call is never retried."""
    clock = FakeClock()
    failures: list[BaseException] = [asyncio.CancelledError(), SourceUnavailable("x")]
    with pytest.raises(asyncio.CancelledError):
        _flaky_async(failures, clock, Retry(attempts=5))
    assert (len(failures), clock.sleeps) == (1, [])


def test_async_cancelling_the_task_during_backoff_propagates_at_once() -> None:
    """Cancelling a task that waits between attempts ends it; no further attempt is made."""
    clock = FakeClock()
    calls: list[int] = []

    async def main() -> None:
        waiting = asyncio.Event()

        async def sleep(seconds: float) -> None:
            clock.sleep(seconds)
            waiting.set()
            await asyncio.Event().wait()  # a backoff that never ends by itself

        async def call_forever_failing() -> None:
            async for attempt in retrying_async(
                Retry(), dependency="api", clock=clock, draw=lambda: 0.5, sleep=sleep
            ):
                with attempt:
                    calls.append(1)
                    raise SourceUnavailable("down")

        task = asyncio.create_task(call_forever_failing())
        await waiting.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    asyncio.run(main())
    assert (len(calls), len(clock.sleeps)) == (1, 1)


def test_async_shares_the_budget_and_emits_recovery() -> None:
    """The async loop deposits, withdraws and emits the same events as the sync one."""
    log = EventLog()
    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, min_per_s=0.0, clock=clock)
    token = bind_run(RunContext("r1", "p", Hooks([log]), clock.now))
    try:
        for _ in range(2):  # two first attempts earn one retry
            assert _flaky_async([], clock, Retry(), budget) == 1
        assert _flaky_async([SourceUnavailable("blip")], clock, Retry(), budget) == 2
        with pytest.raises(SourceUnavailable):
            _flaky_async([SourceUnavailable("a"), SourceUnavailable("b")], clock, Retry(), budget)
    finally:
        unbind_run(token)
    assert log.kinds() == ["retry.scheduled", "retry.recovered"]
