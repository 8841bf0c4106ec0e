"""Waiting out an upstream outage: the retry window, its backoff, wake-ups and breaker probes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Protocol

from soma.llm.breaker import BreakerState, CircuitBreaker
from soma.llm.errors import (
    CircuitOpenError,
    LLMError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from soma.llm.metrics import LLMMetrics
from soma.llm.port import ChatProvider

log = logging.getLogger("soma.llm.outage")

Clock = Callable[[], float]
Pause = Callable[[float, asyncio.Event], Awaitable[None]]
"""Wait up to the given seconds or until the event is set; injectable for tests."""

_BACKOFF_BASE_S = 0.25
_PROBE_TIMEOUT_S = 10.0


async def pause(seconds: float, wake: asyncio.Event) -> None:
    """Sleep `seconds` or until `wake` is set: one timer, no polling; cancellable at once."""
    if seconds <= 0 or wake.is_set():
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await wake.wait()


def reason_of(error: ProviderUnavailableError) -> str:
    """A short label for metrics and tenant-visible errors: never an address or a body."""
    if isinstance(error, CircuitOpenError):
        return "circuit_open"
    if isinstance(error, ProviderTimeoutError) or error.status == 408:
        return "timeout"
    if error.status == 429:
        return "rate_limited"
    if error.status is not None and error.status >= 500:
        return "server_error"
    if error.status is not None:
        return f"http_{error.status}"
    return "unreachable"


class RetryWindow:
    """The waits of one request: equal-jitter exponential backoff, a `Retry-After` honoured up
    to `retry_after_max_s`, all inside `window_s` counted from the first failure."""

    def __init__(
        self,
        window_s: float,
        backoff_max_s: float,
        retry_after_max_s: float,
        clock: Clock,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.window_s = window_s
        self._backoff_max_s = backoff_max_s
        self._retry_after_max_s = retry_after_max_s
        self._clock = clock
        self._rng = rng
        self._deadline: float | None = None
        self.waits = 0

    def next_wait(self, retry_after_s: float | None = None) -> float | None:
        """Seconds to wait before the next try, or None once the window is used up."""
        now = self._clock()
        if self._deadline is None:
            self._deadline = now + self.window_s
        remaining = self._deadline - now
        if remaining <= 0:
            return None
        self.waits += 1
        ceiling = min(self._backoff_max_s, _BACKOFF_BASE_S * 2.0 ** min(self.waits - 1, 30))
        delay = ceiling / 2 + self._rng() * ceiling / 2
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self._retry_after_max_s))
        return min(delay, remaining)


class ChangeSignal:
    """Wakes everyone waiting on `current()` when `notify()` runs, then re-arms."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()


class Probed(Protocol):
    """What a probe needs of a route."""

    @property
    def name(self) -> str: ...

    @property
    def provider(self) -> ChatProvider: ...

    @property
    def breaker(self) -> CircuitBreaker: ...


class BreakerProber:
    """While a breaker is open, probes its upstream (`check()`, no tokens) every
    `interval_s` (doubled per failed trial, at most the breaker's reset) and half-opens it as
    soon as the upstream answers."""

    def __init__(self, interval_s: float, metrics: LLMMetrics) -> None:
        self._interval_s = interval_s
        self._metrics = metrics
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    def watch(self, route: Probed) -> None:
        """Start probing `route` unless a probe already runs; call with its breaker open."""
        task = self._tasks.get(route.name)
        if self._closed or (task is not None and not task.done()):
            return
        self._tasks[route.name] = asyncio.create_task(
            self._probe(route), name=f"llm-probe:{route.name}"
        )

    async def _probe(self, route: Probed) -> None:
        breaker = route.breaker
        while True:
            delay = min(breaker.reset_s, self._interval_s * 2.0 ** min(breaker.failed_trials, 30))
            await asyncio.sleep(delay)
            state = breaker.state
            if state is BreakerState.CLOSED:
                return
            if state is BreakerState.HALF_OPEN:
                # The reset time passed or another path half-opened it: admit the trial now.
                breaker.half_open()
                return
            try:
                async with asyncio.timeout(_PROBE_TIMEOUT_S):
                    await route.provider.check()
            except (LLMError, TimeoutError, OSError) as exc:
                self._metrics.probes.labels(route.name, "unavailable").inc()
                log.debug("probe of model %s: still unavailable (%s)", route.name, type(exc))
                continue
            self._metrics.probes.labels(route.name, "ok").inc()
            if breaker.half_open():
                log.info("model %s answers again: circuit half-open", route.name)
            return

    async def aclose(self) -> None:
        self._closed = True
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
