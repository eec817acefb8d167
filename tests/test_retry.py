"""Retrying a block: full-jitter backoff, Retry-After, deadline, and what is never retried."""

from __future__ import annotations

import asyncio

import pytest

from mendflow import PermanentError, RateLimited, Retry, SourceUnavailable, retrying
from mendflow.events import Hooks, RunContext, bind_run, unbind_run
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
