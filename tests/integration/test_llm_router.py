"""Model router: fallbacks, circuit breakers and metrics over real HTTP to a scripted upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from soma.config.settings import LLMSettings, ModelSettings
from soma.llm.breaker import BreakerState
from soma.llm.errors import (
    ProviderRequestError,
    StreamInterruptedError,
    UnknownModelError,
    UpstreamOutageError,
)
from soma.llm.factory import build_providers
from soma.llm.metrics import LLMMetrics
from soma.llm.openai import OpenAIProvider
from soma.llm.port import ChatProvider
from soma.llm.retry import RetryPolicy
from soma.llm.router import ModelRouter
from soma.llm.types import ChatMessage, ChatRequest
from soma.observability.metrics import Metrics
from tests.support.scripted_llm import HttpError, ScriptedLLM, Text

pytestmark = pytest.mark.integration

HELLO = ChatRequest(messages=[ChatMessage("user", "one two three")])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings(upstream: ScriptedLLM) -> LLMSettings:
    return LLMSettings(
        default_model="gpt",
        retries=0,
        breaker_failures=2,
        breaker_reset_s=30,
        retry_window_s=0,
        probe_interval_s=60,
        models={
            "gpt": ModelSettings(
                provider="openai", base_url=upstream.base_url, model="gpt", fallbacks=["backup"]
            ),
            "backup": ModelSettings(provider="openai", base_url=upstream.base_url, model="backup"),
        },
    )


@pytest.fixture
async def providers(settings: LLMSettings) -> AsyncIterator[dict[str, ChatProvider]]:
    providers = build_providers(settings)
    yield providers
    await asyncio.gather(*(p.aclose() for p in providers.values()))


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def router(
    settings: LLMSettings, providers: dict[str, ChatProvider], metrics: Metrics, clock: Clock
) -> AsyncIterator[ModelRouter]:
    router = ModelRouter(settings, LLMMetrics(metrics), providers, clock=clock)
    yield router
    await router.aclose()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_names_chain_and_unknown_models(router: ModelRouter) -> None:
    assert router.names() == ["backup", "gpt", "local"]
    assert router.chain(None) == ["gpt", "backup"]
    assert router.chain("GPT") == ["gpt", "backup"]
    with pytest.raises(UnknownModelError, match=r"unknown model 'nope'; known models: backup, gpt"):
        router.chain("nope")


async def test_a_5xx_before_the_first_chunk_falls_back(
    upstream: ScriptedLLM, router: ModelRouter, metrics: Metrics
) -> None:
    upstream.script(HttpError(500), model="gpt")
    upstream.script(Text("from backup", chunks=2), model="backup")
    result = await router.complete("gpt", HELLO)
    assert (result.content, result.model, result.provider) == ("from backup", "backup", "openai")
    assert [r.model for r in upstream.chat_requests()] == ["gpt", "backup"]
    requests = "soma_llm_requests_total"
    assert sample(metrics, requests, model="gpt", provider="openai", outcome="unavailable") == 1
    assert sample(metrics, requests, model="backup", provider="openai", outcome="ok") == 1
    assert sample(metrics, "soma_llm_tokens_total", model="backup", direction="in") == 3
    assert sample(metrics, "soma_llm_tokens_total", model="backup", direction="out") == 2
    ttft = "soma_llm_time_to_first_token_seconds_count"
    assert sample(metrics, ttft, model="backup") == 1
    assert sample(metrics, "soma_llm_request_duration_seconds_count", model="backup") == 1


async def test_when_every_model_fails_the_error_names_each(
    upstream: ScriptedLLM, router: ModelRouter
) -> None:
    upstream.script(HttpError(503, message="gpt down"), model="gpt")
    upstream.script(HttpError(500, message="backup down"), model="backup")
    with pytest.raises(UpstreamOutageError, match=r"model 'gpt' did not answer") as caught:
        await router.complete(None, HELLO)
    assert [name for name, _ in caught.value.failures] == ["gpt", "backup"]
    assert "gpt down" in caught.value.failures[0][1]
    assert "backup down" in caught.value.failures[1][1]
    assert caught.value.reason == "server_error"
    assert "127.0.0.1" not in str(caught.value)


async def test_breaker_opens_then_half_open_trial_recovers(
    upstream: ScriptedLLM, router: ModelRouter, metrics: Metrics, clock: Clock
) -> None:
    upstream.script(HttpError(500), HttpError(500), model="gpt")
    upstream.script(Text("b1"), Text("b2"), Text("b3"), model="backup")
    for expected in ("b1", "b2"):
        assert (await router.complete("gpt", HELLO)).content == expected
    breaker = router.route("gpt").breaker
    assert breaker.state is BreakerState.OPEN
    assert (await router.complete("gpt", HELLO)).content == "b3"
    assert len(upstream.chat_requests("gpt")) == 2  # the open circuit never called upstream
    outcome = {"model": "gpt", "provider": "openai", "outcome": "circuit_open"}
    assert sample(metrics, "soma_llm_requests_total", **outcome) == 1

    clock.now += 30
    assert breaker.state is BreakerState.HALF_OPEN
    upstream.script(Text("gpt is back"), model="gpt")
    assert (await router.complete("gpt", HELLO)).content == "gpt is back"
    assert breaker.state is BreakerState.CLOSED


async def test_a_failed_half_open_trial_opens_the_circuit_again(
    upstream: ScriptedLLM, router: ModelRouter, clock: Clock
) -> None:
    upstream.script(HttpError(500), HttpError(500), HttpError(500), model="gpt")
    upstream.script(Text("b"), Text("b"), Text("b"), model="backup")
    for _ in range(2):
        await router.complete("gpt", HELLO)
    clock.now += 30
    await router.complete("gpt", HELLO)
    assert router.route("gpt").breaker.state is BreakerState.OPEN
    assert len(upstream.chat_requests("gpt")) == 3


async def test_an_error_after_the_first_chunk_does_not_fall_back(
    upstream: ScriptedLLM, router: ModelRouter, metrics: Metrics
) -> None:
    upstream.script(Text("partial answer", chunks=3, fail_after=1), model="gpt")
    seen: list[str] = []
    with pytest.raises(StreamInterruptedError):
        async for chunk in router.stream("gpt", HELLO):
            seen.append(chunk.text)
    assert seen == ["parti"]
    assert upstream.chat_requests("backup") == []
    outcome = {"model": "gpt", "provider": "openai", "outcome": "interrupted"}
    assert sample(metrics, "soma_llm_requests_total", **outcome) == 1


async def test_a_rejected_request_is_not_sent_to_fallbacks(
    upstream: ScriptedLLM, router: ModelRouter
) -> None:
    upstream.script(HttpError(400, message="context too long"), model="gpt")
    with pytest.raises(ProviderRequestError, match="context too long"):
        await router.complete("gpt", HELLO)
    assert upstream.chat_requests("backup") == []
    assert router.route("gpt").breaker.consecutive_failures == 0


async def test_first_chunk_is_stamped_with_the_serving_model(
    upstream: ScriptedLLM, router: ModelRouter
) -> None:
    upstream.script(Text("abc", chunks=3), model="gpt")
    chunks = [c async for c in router.stream(None, HELLO)]
    assert (chunks[0].model, chunks[0].provider) == ("gpt", "openai")
    assert all(c.model is None for c in chunks[1:])


async def test_a_cancelled_stream_counts_as_cancelled_and_spares_the_breaker(
    upstream: ScriptedLLM, router: ModelRouter, metrics: Metrics
) -> None:
    upstream.script(Text("z" * 100, chunks=50, delay_s=0.02), model="gpt")
    stream = router.stream("gpt", HELLO)
    await anext(stream)
    await stream.aclose()
    outcome = {"model": "gpt", "provider": "openai", "outcome": "cancelled"}
    assert sample(metrics, "soma_llm_requests_total", **outcome) == 1
    assert router.route("gpt").breaker.consecutive_failures == 0
    deadline = asyncio.get_running_loop().time() + 5
    while upstream.abandoned_streams == 0:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


async def test_retries_happen_inside_a_model_before_falling_back(
    upstream: ScriptedLLM, settings: LLMSettings, metrics: Metrics
) -> None:
    providers: dict[str, ChatProvider] = {
        name: OpenAIProvider(name, upstream.base_url, name, retry=RetryPolicy(2, base_s=0.01))
        for name in ("gpt", "backup", "local")
    }
    router = ModelRouter(settings, LLMMetrics(metrics), providers)
    upstream.script(HttpError(500), HttpError(429, retry_after=0), Text("third time"), model="gpt")
    try:
        assert (await router.complete("gpt", HELLO)).content == "third time"
        assert upstream.chat_requests("backup") == []
    finally:
        await asyncio.gather(*(p.aclose() for p in providers.values()))
