"""Model names → provider chains (the model, then its fallbacks), guarded by circuit breakers.

A chain that is unavailable before its first chunk (connect errors, timeouts, 5xx, 429, open
circuits) is waited out within `llm.retry_window_s`; a failure after the first chunk never is.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, replace

from soma.config.settings import LLMSettings
from soma.llm import outage
from soma.llm.accumulate import collect
from soma.llm.breaker import BreakerState, CircuitBreaker
from soma.llm.errors import (
    CircuitOpenError,
    ProviderRequestError,
    ProviderUnavailableError,
    StreamInterruptedError,
    UnknownModelError,
    UpstreamOutageError,
)
from soma.llm.metrics import LLMMetrics
from soma.llm.outage import BreakerProber, ChangeSignal, RetryWindow, reason_of
from soma.llm.port import ChatProvider
from soma.llm.types import ChatChunk, ChatRequest, ChatResult, Usage

log = logging.getLogger("soma.llm.router")


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    provider: ChatProvider
    breaker: CircuitBreaker
    fallbacks: tuple[str, ...]


class _ChainUnavailable(Exception):
    """Internal: every model of the chain failed (or was skipped) before the first chunk."""

    def __init__(self, failures: list[tuple[str, ProviderUnavailableError]]) -> None:
        super().__init__("; ".join(f"{name}: {error}" for name, error in failures))
        self.failures = failures

    def retry_after_s(self) -> float | None:
        """The soonest any model asked to be called again, if every one of them asked."""
        hints = [error.retry_after_s for _, error in self.failures]
        if not hints or any(hint is None for hint in hints):
            return None
        return min(hint for hint in hints if hint is not None)


class ModelRouter:
    """Streams a request through the first model of the chain that can serve it."""

    def __init__(
        self,
        settings: LLMSettings,
        metrics: LLMMetrics,
        providers: Mapping[str, ChatProvider],
        clock: Callable[[], float] = time.monotonic,
        pause: outage.Pause = outage.pause,
        rng: Callable[[], float] = random.random,
    ) -> None:
        missing = sorted(set(settings.models) - set(providers))
        if missing:
            raise ValueError(f"no provider built for models: {', '.join(missing)}")
        self.default_model = settings.default_model
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._pause = pause
        self._rng = rng
        self._changes = ChangeSignal()
        self._prober = BreakerProber(settings.probe_interval_s, metrics)
        self._routes: dict[str, Route] = {}
        for name, model in settings.models.items():
            breaker = CircuitBreaker(
                name,
                settings.breaker_failures,
                settings.breaker_reset_s,
                clock,
                on_change=functools.partial(self._breaker_changed, name),
            )
            metrics.circuit_open.labels(name).set_function(functools.partial(_is_open, breaker))
            self._routes[name] = Route(
                name=name,
                provider=providers[name],
                breaker=breaker,
                fallbacks=tuple(f.lower() for f in model.fallbacks if f.lower() != name),
            )

    def names(self) -> list[str]:
        return sorted(self._routes)

    def route(self, name: str) -> Route:
        return self._routes[self.resolve(name)]

    def resolve(self, name: str | None) -> str:
        """The configured name for `name` (None → the default model); unknown names raise."""
        key = self.default_model if name is None else name.lower()
        if key not in self._routes:
            raise UnknownModelError(name or "", list(self._routes))
        return key

    def chain(self, name: str | None) -> list[str]:
        first = self.resolve(name)
        chain = [first]
        for fallback in self._routes[first].fallbacks:
            if fallback not in chain:
                chain.append(fallback)
        return chain

    def open_circuits(self) -> list[str]:
        """Models whose breaker is open now (calls to them wait)."""
        return sorted(n for n, r in self._routes.items() if r.breaker.state is BreakerState.OPEN)

    def _breaker_changed(self, name: str) -> None:
        self._changes.notify()
        route = self._routes[name]
        if route.breaker.state is BreakerState.OPEN:
            self._prober.watch(route)

    async def aclose(self) -> None:
        """Stop the probes; the providers belong to the caller."""
        await self._prober.aclose()

    async def complete(self, model: str | None, request: ChatRequest) -> ChatResult:
        async with aclosing(self.stream(model, request)) as chunks:
            return await collect(chunks)

    async def stream(
        self, model: str | None, request: ChatRequest
    ) -> AsyncGenerator[ChatChunk, None]:
        """Stream from the first model of the chain that answers, waiting out outages."""
        name = self.resolve(model)
        began = time.perf_counter()
        settings = self._settings
        window = RetryWindow(
            settings.retry_window_s,
            settings.retry_backoff_max_s,
            settings.retry_after_max_s,
            self._clock,
            self._rng,
        )
        waited_since: float | None = None
        try:
            while True:
                # Taken before the attempt, so a breaker change during it cuts the wait short.
                wake = self._changes.current()
                try:
                    async with aclosing(self._first_available(name, request, began)) as chunks:
                        async for chunk in chunks:
                            yield chunk
                    return
                except _ChainUnavailable as unavailable:
                    failure = unavailable
                reason = reason_of(failure.failures[0][1])
                delay = window.next_wait(failure.retry_after_s())
                if delay is None:
                    self._metrics.window_exhausted.labels(name).inc()
                    log.warning(
                        "llm model unavailable for the whole retry window: giving up",
                        extra={"model": name, "reason": reason, "waits": window.waits},
                    )
                    failures = [(n, str(e)) for n, e in failure.failures]
                    raise UpstreamOutageError(
                        name, failures, window.window_s, reason
                    ) from failure.failures[-1][1]
                self._metrics.retry_waits.labels(name, reason).inc()
                if waited_since is None:
                    waited_since = time.perf_counter()
                    self._metrics.waiting.labels(name).inc()
                    log.warning(
                        "llm model unavailable: waiting for it",
                        extra={"model": name, "reason": reason, "window_s": window.window_s},
                    )
                await self._pause(delay, wake)
        finally:
            if waited_since is not None:
                self._metrics.waiting.labels(name).dec()

    async def _first_available(
        self, name: str, request: ChatRequest, began: float
    ) -> AsyncGenerator[ChatChunk, None]:
        """One pass over the chain; falls back only on failures before the first chunk."""
        failures: list[tuple[str, ProviderUnavailableError]] = []
        for candidate in self.chain(name):
            route = self._routes[candidate]
            kind = route.provider.kind
            try:
                route.breaker.acquire()
            except CircuitOpenError as exc:
                self._metrics.requests.labels(candidate, kind, "circuit_open").inc()
                failures.append((candidate, exc))
                continue
            first = True
            outcome = "cancelled"
            usage: Usage | None = None
            try:
                async with aclosing(route.provider.stream(request)) as chunks:
                    async for chunk in chunks:
                        if first:
                            first = False
                            route.breaker.success()
                            self._metrics.time_to_first_token.labels(candidate).observe(
                                time.perf_counter() - began
                            )
                            chunk = replace(chunk, model=candidate, provider=kind)
                        if chunk.usage is not None:
                            usage = chunk.usage
                        yield chunk
                outcome = "ok"
            except ProviderUnavailableError as exc:
                route.breaker.failure()
                if not first:
                    outcome = "interrupted"
                    raise StreamInterruptedError(f"{candidate}: {exc}") from exc
                outcome = "unavailable"
                failures.append((candidate, exc))
                log.info(
                    "llm model unavailable, trying the next in its chain",
                    extra={"model": candidate, "requested": name, "reason": reason_of(exc)},
                )
                continue
            except StreamInterruptedError:
                route.breaker.failure()
                outcome = "interrupted"
                raise
            except ProviderRequestError:
                # The backend answered, so this says nothing about its availability.
                route.breaker.release()
                outcome = "rejected"
                raise
            except Exception:
                route.breaker.failure()
                outcome = "error"
                raise
            finally:
                if outcome == "cancelled" and first:
                    route.breaker.release()
                self._metrics.requests.labels(candidate, kind, outcome).inc()
                if outcome == "ok":
                    self._observe_done(candidate, began, usage)
            return
        raise _ChainUnavailable(failures)

    def _observe_done(self, model: str, began: float, usage: Usage | None) -> None:
        self._metrics.duration.labels(model).observe(time.perf_counter() - began)
        if usage is not None:
            self._metrics.tokens.labels(model, "in").inc(usage.prompt_tokens)
            self._metrics.tokens.labels(model, "out").inc(usage.completion_tokens)


def _is_open(breaker: CircuitBreaker) -> float:
    return float(breaker.state is BreakerState.OPEN)
