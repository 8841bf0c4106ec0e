"""Circuit breaker per model: closed → open → half-open (one trial) → closed or open again."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from soma.llm.errors import CircuitOpenError


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Call `acquire()` before a request, then exactly one of `success`, `failure` or `release`."""

    def __init__(
        self,
        name: str,
        failure_threshold: int,
        reset_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_s:
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def acquire(self) -> None:
        """Admit a request or raise `CircuitOpenError` at once."""
        state = self.state
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._state = BreakerState.HALF_OPEN
            self._trial_in_flight = True
            return
        if state is BreakerState.HALF_OPEN:
            raise CircuitOpenError(f"{self.name}: circuit half-open, a trial request is in flight")
        wait = max(0.0, self.reset_s - (self._clock() - self._opened_at))
        raise CircuitOpenError(
            f"{self.name}: circuit open after {self._failures} consecutive failures,"
            f" next trial in {wait:.1f}s"
        )

    def success(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._trial_in_flight = False

    def failure(self) -> None:
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
        self._trial_in_flight = False

    def release(self) -> None:
        """The admitted request ended without a verdict (cancelled): let another trial in."""
        self._trial_in_flight = False
