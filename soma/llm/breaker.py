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


def _nothing() -> None:
    return None


class CircuitBreaker:
    """Call `acquire()` before a request, then exactly one of `success`, `failure` or `release`.

    An open breaker half-opens after `reset_s`, or earlier through `half_open()` when a probe
    found the upstream answering. `on_change` runs whenever admission may have changed.
    """

    def __init__(
        self,
        name: str,
        failure_threshold: int,
        reset_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[], None] = _nothing,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self._failed_trials = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_s:
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def failed_trials(self) -> int:
        """Half-open trials that failed in a row since the breaker was last closed."""
        return self._failed_trials

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

    def half_open(self) -> bool:
        """A probe saw the upstream answer: admit one trial now. False unless it was open."""
        if self._state is not BreakerState.OPEN:
            return False
        self._state = BreakerState.HALF_OPEN
        self._trial_in_flight = False
        self._on_change()
        return True

    def success(self) -> None:
        changed = self._state is not BreakerState.CLOSED
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._failed_trials = 0
        self._trial_in_flight = False
        if changed:
            self._on_change()

    def failure(self) -> None:
        self._failures += 1
        was = self._state
        if was is BreakerState.HALF_OPEN:
            self._failed_trials += 1
        if was is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
        self._trial_in_flight = False
        if was is not self._state or was is BreakerState.HALF_OPEN:
            self._on_change()

    def release(self) -> None:
        """The admitted request ended without a verdict (cancelled): let another trial in."""
        in_flight = self._trial_in_flight
        self._trial_in_flight = False
        if in_flight:
            self._on_change()
