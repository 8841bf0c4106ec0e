"""Model names → provider chains (the model, then its fallbacks), guarded by circuit breakers."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, replace

from soma.config.settings import LLMSettings
from soma.llm.accumulate import collect
from soma.llm.breaker import CircuitBreaker
from soma.llm.errors import (
    AllModelsFailedError,
    CircuitOpenError,
    ProviderRequestError,
    ProviderUnavailableError,
    StreamInterruptedError,
    UnknownModelError,
)
from soma.llm.metrics import LLMMetrics
from soma.llm.port import ChatProvider
from soma.llm.types import ChatChunk, ChatRequest, ChatResult, Usage

log = logging.getLogger("soma.llm.router")


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    provider: ChatProvider
    breaker: CircuitBreaker
    fallbacks: tuple[str, ...]


class ModelRouter:
    """Streams a request through the first model of the chain that can serve it."""

    def __init__(
        self,
        settings: LLMSettings,
        metrics: LLMMetrics,
        providers: Mapping[str, ChatProvider],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        missing = sorted(set(settings.models) - set(providers))
        if missing:
            raise ValueError(f"no provider built for models: {', '.join(missing)}")
        self.default_model = settings.default_model
        self._metrics = metrics
        self._routes = {
            name: Route(
                name=name,
                provider=providers[name],
                breaker=CircuitBreaker(
                    name, settings.breaker_failures, settings.breaker_reset_s, clock
                ),
                fallbacks=tuple(f.lower() for f in model.fallbacks if f.lower() != name),
            )
            for name, model in settings.models.items()
        }

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

    async def complete(self, model: str | None, request: ChatRequest) -> ChatResult:
        async with aclosing(self.stream(model, request)) as chunks:
            return await collect(chunks)

    async def stream(
        self, model: str | None, request: ChatRequest
    ) -> AsyncGenerator[ChatChunk, None]:
        """Fall back only on failures before the first chunk; later errors are raised."""
        name = self.resolve(model)
        began = time.perf_counter()
        failures: list[tuple[str, str]] = []
        for candidate in self.chain(name):
            route = self._routes[candidate]
            kind = route.provider.kind
            try:
                route.breaker.acquire()
            except CircuitOpenError as exc:
                self._metrics.requests.labels(candidate, kind, "circuit_open").inc()
                failures.append((candidate, str(exc)))
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
                failures.append((candidate, str(exc)))
                log.warning(
                    "llm model unavailable, trying the next in its chain",
                    extra={"model": candidate, "requested": name, "error": str(exc)},
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
        raise AllModelsFailedError(name, failures)

    def _observe_done(self, model: str, began: float, usage: Usage | None) -> None:
        self._metrics.duration.labels(model).observe(time.perf_counter() - began)
        if usage is not None:
            self._metrics.tokens.labels(model, "in").inc(usage.prompt_tokens)
            self._metrics.tokens.labels(model, "out").inc(usage.completion_tokens)
