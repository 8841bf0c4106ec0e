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
