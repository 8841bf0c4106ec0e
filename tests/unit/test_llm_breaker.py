"""Circuit breaker transitions and the retry policy, driven by a hand-advanced clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from soma.llm.breaker import BreakerState, CircuitBreaker
from soma.llm.errors import CircuitOpenError
from soma.llm.retry import RetryPolicy, parse_retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_fails_fast() -> None:
    clock = Clock()
    breaker = CircuitBreaker("gpt", failure_threshold=3, reset_s=10, clock=clock)
    for _ in range(2):
        breaker.acquire()
        breaker.failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.acquire()
    breaker.success()
    assert breaker.consecutive_failures == 0
    for _ in range(3):
        breaker.acquire()
        breaker.failure()
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError, match="gpt: circuit open after 3 consecutive failures"):
        breaker.acquire()


def test_half_open_admits_one_trial_then_closes_on_success() -> None:
    clock = Clock()
    breaker = CircuitBreaker("gpt", failure_threshold=1, reset_s=10, clock=clock)
    breaker.acquire()
    breaker.failure()
    clock.now += 10
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.acquire()
    with pytest.raises(CircuitOpenError, match="trial request is in flight"):
        breaker.acquire()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED
    breaker.acquire()


def test_failed_trial_reopens_and_a_released_trial_lets_another_in() -> None:
    clock = Clock()
    breaker = CircuitBreaker("gpt", failure_threshold=1, reset_s=5, clock=clock)
    breaker.acquire()
    breaker.failure()
    clock.now += 5
    breaker.acquire()
    breaker.failure()
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    clock.now += 5
    breaker.acquire()
    breaker.release()
    breaker.acquire()
    assert breaker.state is BreakerState.HALF_OPEN


def test_a_probe_half_opens_an_open_breaker_at_once_and_changes_are_announced() -> None:
    clock = Clock()
    changes: list[BreakerState] = []
    breaker = CircuitBreaker("gpt", 2, 30, clock, on_change=lambda: changes.append(breaker.state))
    assert breaker.half_open() is False  # closed: nothing to do
    breaker.acquire()
    breaker.failure()
    assert changes == []  # below the threshold nothing changes for waiters
    breaker.acquire()
    breaker.failure()
    assert changes == [BreakerState.OPEN]
    assert breaker.half_open() is True  # the upstream answered a probe: no 30 s wait
    assert changes[-1] is BreakerState.HALF_OPEN
    breaker.acquire()
    breaker.failure()  # the trial failed: open again, one failed trial counted
    assert (breaker.state, breaker.failed_trials) == (BreakerState.OPEN, 1)
    assert breaker.half_open() is True
    breaker.acquire()
    breaker.release()  # a cancelled trial frees the slot for a waiter: announced
    assert changes[-1] is BreakerState.HALF_OPEN and len(changes) == 5
    breaker.acquire()
    breaker.success()
    assert (changes[-1], breaker.failed_trials) == (BreakerState.CLOSED, 0)
    count = len(changes)
    breaker.success()
    breaker.release()  # no trial in flight: nothing to announce
    assert len(changes) == count


def test_retry_policy_backs_off_with_jitter_and_honours_small_retry_after() -> None:
    policy = RetryPolicy(retries=3, base_s=1.0, cap_s=3.0, max_retry_after_s=5, rng=lambda: 1.0)
    assert [policy.delay(n) for n in (1, 2, 3)] == [1.0, 2.0, 3.0]
    assert policy.delay(4) is None
    low = RetryPolicy(retries=3, base_s=1.0, cap_s=3.0, rng=lambda: 0.0)
    assert [low.delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 1.5]
    assert policy.delay(1, retry_after_s=4) == 4
    assert policy.delay(1, retry_after_s=60) is None


def test_retry_after_parses_seconds_and_http_dates() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    later = (now + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(later, now=now) == 30.0
