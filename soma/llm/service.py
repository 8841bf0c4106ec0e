"""The `llm` platform service: builds providers and the router, probes them without tokens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable

from soma.config.settings import LLMSettings, Settings
from soma.core.errors import StartupError
from soma.core.redact import redact_url
from soma.core.service import Health, HealthStatus
from soma.llm.breaker import BreakerState
from soma.llm.errors import LLMError
from soma.llm.factory import build_providers, preloaded_models
from soma.llm.local import LocalProvider
from soma.llm.local_model import bundled_model_path
from soma.llm.metrics import LLMMetrics
from soma.llm.openai import OpenAIProvider
from soma.llm.port import ChatProvider
from soma.llm.router import ModelRouter
from soma.llm.types import ChatChunk, ChatRequest
from soma.observability.metrics import Metrics

ProviderFactory = Callable[[LLMSettings], dict[str, ChatProvider]]


class LLMService:
    """Owns every chat provider; `router` is the API the runtime and gateway call."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        provider_factory: ProviderFactory = build_providers,
        health_ttl_s: float = 5.0,
    ) -> None:
        self._settings = settings.llm
        self._metrics = LLMMetrics(metrics)
        self._factory = provider_factory
        self._health_ttl_s = health_ttl_s
        self._providers: dict[str, ChatProvider] = {}
        self._router: ModelRouter | None = None
        self._checks: dict[str, tuple[float, bool, str]] = {}

    @property
    def name(self) -> str:
        return "llm"

    @property
    def router(self) -> ModelRouter:
        if self._router is None:
            raise RuntimeError("the llm service is not started")
        return self._router

    async def start(self) -> None:
        providers = self._factory(self._settings)
        try:
            await self._warm_up(providers)
        except LLMError as exc:
            await asyncio.gather(*(p.aclose() for p in providers.values()))
            raise StartupError(f"llm: {exc}") from exc
        self._providers = providers
        self._router = ModelRouter(self._settings, self._metrics, providers)

    async def _warm_up(self, providers: dict[str, ChatProvider]) -> None:
        """Load local models the first chat would wait for; prove remote endpoints answer."""
        for name in preloaded_models(self._settings):
            provider = providers[name]
            if isinstance(provider, LocalProvider):
                await provider.load()
        remote = [(n, p) for n, p in providers.items() if isinstance(p, OpenAIProvider)]
        results = await asyncio.gather(*(p.check() for _, p in remote), return_exceptions=True)
        for (name, provider), result in zip(remote, results, strict=True):
            if isinstance(result, LLMError):
                raise LLMError(f"model {name!r} at {provider.where}: {result}")
            if isinstance(result, BaseException):
                raise result

    def stream(self, model: str | None, request: ChatRequest) -> AsyncGenerator[ChatChunk, None]:
        """Route to the started router; workers hold the service, built before it starts."""
        return self.router.stream(model, request)

    async def stop(self) -> None:
        router, providers = self._router, self._providers
        self._providers, self._router = {}, None
        self._checks.clear()
        if router is not None:
            await router.aclose()
        await asyncio.gather(*(p.aclose() for p in providers.values()))

    async def health(self) -> Health:
        if self._router is None:
            return Health(HealthStatus.STOPPED, "not started")
        names = list(self._providers)
        results = await asyncio.gather(*(self._check(n) for n in names))
        failing = [n for n, (ok, _) in zip(names, results, strict=True) if not ok]
        details = []
        for name, (_, detail) in zip(names, results, strict=True):
            breaker = self._router.route(name).breaker.state
            suffix = "" if breaker is BreakerState.CLOSED else f" [circuit {breaker}]"
            details.append(f"{name}: {detail}{suffix}")
        open_circuits = self._router.open_circuits()
        if open_circuits:
            # Calls to these models wait for their upstream rather than fail: say so first.
            details.insert(0, f"circuit open (requests wait): {', '.join(open_circuits)}")
        detail = "; ".join(details)
        if failing or open_circuits:
            # An unreachable upstream degrades the service but loses nothing: requests wait for
            # it (`llm.retry_window_s`), so accepting work can go on.
            return Health(HealthStatus.DEGRADED, detail)
        return Health(HealthStatus.HEALTHY, detail)

    async def _check(self, name: str) -> tuple[bool, str]:
        """`check()` of one model, cached so health probes do not hammer upstreams."""
        now = time.monotonic()
        cached = self._checks.get(name)
        if cached is not None and now - cached[0] < self._health_ttl_s:
            return cached[1], cached[2]
        try:
            ok, detail = True, await self._providers[name].check()
        except LLMError as exc:
            ok, detail = False, str(exc)
        self._checks[name] = (time.monotonic(), ok, detail)
        return ok, detail


def describe(settings: Settings) -> str:
    """One line for the dry-run plan, e.g. `default=local (local SmolLM2...), gpt=openai http://...`."""
    llm = settings.llm
    names = [llm.default_model, *sorted(n for n in llm.models if n != llm.default_model)]
    parts = []
    for name in names:
        model = llm.models[name]
        if model.provider == "openai":
            target = f"openai {redact_url(model.base_url or '')} model={model.model or name}"
        elif model.path is not None:
            target = f"local {model.path}"
        else:
            try:
                target = f"local {bundled_model_path().name}, bundled"
            except LLMError as exc:
                target = f"local MISSING: {exc}"
        if model.fallbacks:
            target += f" fallbacks=[{', '.join(model.fallbacks)}]"
        label = f"default={name}" if name == llm.default_model else name
        parts.append(f"{label} ({target})" if name == llm.default_model else f"{label}={target}")
    return ", ".join(parts)
