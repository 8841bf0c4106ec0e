"""An upstream outage over real HTTP: the scripted server stopped, then restarted on its port."""

from __future__ import annotations

import asyncio

import pytest

from soma.config.settings import LLMSettings, ModelSettings, Settings
from soma.core.service import HealthStatus
from soma.llm.breaker import BreakerState
from soma.llm.errors import ProviderRequestError, UpstreamOutageError
from soma.llm.service import LLMService
from soma.llm.types import ChatMessage, ChatRequest, ChatResult
from soma.observability.metrics import Metrics
from tests.support.scripted_llm import HttpError, ScriptedLLM, Text

pytestmark = pytest.mark.integration

WAITERS = 12


def outage_settings(base_url: str, window_s: float) -> Settings:
    return Settings(
        llm=LLMSettings(
            default_model="gpt",
            retries=0,
            breaker_failures=3,
            breaker_reset_s=3600,
            retry_window_s=window_s,
            retry_backoff_max_s=0.5,
            probe_interval_s=0.05,
            models={
                "gpt": ModelSettings(provider="openai", base_url=base_url, model="up", timeout_s=5)
            },
        )
    )


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def ask(text: str) -> ChatRequest:
    return ChatRequest(messages=[ChatMessage("user", text)])


async def test_requests_wait_for_a_restarted_upstream_and_health_says_degraded() -> None:
    first = ScriptedLLM().start()
    port = first.port
    metrics = Metrics()
    service = LLMService(outage_settings(first.base_url, 120), metrics, health_ttl_s=0)
    await service.start()
    restarted: ScriptedLLM | None = None
    try:
        first.stop()
        waiters = [
            asyncio.create_task(service.router.complete(None, ask(f"question {i}")))
            for i in range(WAITERS)
        ]
        async with asyncio.timeout(60):
            while service.router.open_circuits() != ["gpt"]:
                await asyncio.sleep(0.02)
        health = await service.health()
        assert health.status is not HealthStatus.HEALTHY
        assert "circuit open (requests wait): gpt" in health.detail
        assert not any(w.done() for w in waiters)
        assert sample(metrics, "soma_llm_waiting_requests", model="gpt") == WAITERS

        restarted = ScriptedLLM(port=port).start()
        async with asyncio.timeout(60):
            results: list[ChatResult] = await asyncio.gather(*waiters)
        assert [r.content for r in results] == [f"You said: question {i}" for i in range(WAITERS)]
        # Every waiter reached the new server exactly once; the probe made it half-open.
        assert len(restarted.chat_requests()) == WAITERS
        assert service.router.route("gpt").breaker.state is BreakerState.CLOSED
        assert (await service.health()).status is HealthStatus.HEALTHY
        probes = "soma_llm_breaker_probes_total"
        assert sample(metrics, probes, model="gpt", result="ok") == 1
        waits = "soma_llm_retry_waits_total"
        assert sample(metrics, waits, model="gpt", reason="unreachable") >= 3
        assert sample(metrics, waits, model="gpt", reason="circuit_open") >= 1
        assert sample(metrics, "soma_llm_waiting_requests", model="gpt") == 0
    finally:
        await service.stop()
        if restarted is not None:
            restarted.stop()


async def test_an_outage_longer_than_the_window_fails_with_the_clear_error() -> None:
    server = ScriptedLLM().start()
    metrics = Metrics()
    service = LLMService(outage_settings(server.base_url, 1.0), metrics, health_ttl_s=0)
    await service.start()
    try:
        server.stop()
        with pytest.raises(UpstreamOutageError) as caught:
            await service.router.complete(None, ask("anyone there?"))
        message = str(caught.value)
        assert message.startswith("the model upstream is unavailable: model 'gpt'")
        assert "retry window of 1s" in message
        assert "127.0.0.1" not in message
        assert sample(metrics, "soma_llm_retry_window_exhausted_total", model="gpt") == 1
    finally:
        await service.stop()


async def test_a_503_with_retry_after_is_waited_out_then_answered() -> None:
    with ScriptedLLM() as server:
        metrics = Metrics()
        service = LLMService(outage_settings(server.base_url, 30), metrics, health_ttl_s=0)
        await service.start()
        try:
            server.script(HttpError(503, retry_after=0.2), HttpError(429, retry_after=0.1))
            server.script(Text("finally"))
            result = await service.router.complete(None, ask("hello"))
            assert result.content == "finally"
            assert len(server.chat_requests()) == 3
            waits = "soma_llm_retry_waits_total"
            assert sample(metrics, waits, model="gpt", reason="server_error") == 1
            assert sample(metrics, waits, model="gpt", reason="rate_limited") == 1
        finally:
            await service.stop()


async def test_a_rejected_request_is_not_waited_for() -> None:
    with ScriptedLLM() as server:
        metrics = Metrics()
        service = LLMService(outage_settings(server.base_url, 30), metrics, health_ttl_s=0)
        await service.start()
        try:
            server.script(HttpError(400, message="prompt too long"))
            with pytest.raises(ProviderRequestError, match="prompt too long"):
                await service.router.complete(None, ask("hello"))
            assert len(server.chat_requests()) == 1
            assert (
                sample(metrics, "soma_llm_retry_waits_total", model="gpt", reason="http_400") == 0
            )
        finally:
            await service.stop()
