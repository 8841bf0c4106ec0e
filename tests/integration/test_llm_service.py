"""The `llm` service: start-up warm-up, health probes without tokens, stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from soma.config.settings import LLMSettings, ModelSettings, Settings
from soma.core.errors import StartupError
from soma.core.service import HealthStatus, Service
from soma.llm.local import LocalProvider
from soma.llm.service import LLMService
from soma.llm.types import ChatMessage, ChatRequest
from soma.observability.metrics import Metrics
from tests.support.scripted_llm import ScriptedLLM, Text

pytestmark = pytest.mark.integration


def remote_settings(base_url: str, default: str = "gpt") -> Settings:
    return Settings(
        llm=LLMSettings(
            default_model=default,
            models={"gpt": ModelSettings(provider="openai", base_url=base_url, model="up")},
        )
    )


async def test_start_routes_chats_and_leaves_an_unused_local_model_unloaded(
    upstream: ScriptedLLM,
) -> None:
    service = LLMService(remote_settings(upstream.base_url), Metrics())
    assert isinstance(service, Service)
    assert service.name == "llm"
    await service.start()
    try:
        local = service.router.route("local").provider
        assert isinstance(local, LocalProvider)
        assert not local.loaded
        upstream.script(Text("hi from upstream"))
        result = await service.router.complete(None, ChatRequest([ChatMessage("user", "hi")]))
        assert (result.content, result.model) == ("hi from upstream", "gpt")
        health = await service.health()
        assert health.status is HealthStatus.HEALTHY
        assert "gpt: reachable" in health.detail
        assert "local: SmolLM2-135M-Instruct.Q4_1.gguf present" in health.detail
    finally:
        await service.stop()
    with pytest.raises(RuntimeError, match="not started"):
        _ = service.router
    assert (await service.health()).status is HealthStatus.STOPPED


async def test_health_probes_are_cached_and_spend_no_tokens(upstream: ScriptedLLM) -> None:
    service = LLMService(remote_settings(upstream.base_url), Metrics(), health_ttl_s=60)
    await service.start()
    try:
        before = len(upstream.requests)
        for _ in range(5):
            assert (await service.health()).status is HealthStatus.HEALTHY
        probes = upstream.requests[before:]
        assert [r.path for r in probes] == ["/v1/models"]
        assert upstream.chat_requests() == []
    finally:
        await service.stop()


async def test_an_unreachable_upstream_degrades_the_service_whether_default_or_not() -> None:
    # Requests to it wait for it (llm.retry_window_s): degraded, not down.
    server = ScriptedLLM().start()
    default = LLMService(remote_settings(server.base_url), Metrics(), health_ttl_s=0)
    optional = LLMService(remote_settings(server.base_url, "local"), Metrics(), health_ttl_s=0)
    await default.start()
    await optional.start()
    try:
        assert (await default.health()).status is HealthStatus.HEALTHY
        server.stop()
        for service in (default, optional):
            health = await service.health()
            assert health.status is HealthStatus.DEGRADED
            assert "gpt:" in health.detail and "unreachable" in health.detail
    finally:
        await default.stop()
        await optional.stop()


async def test_start_fails_with_one_line_when_an_upstream_is_unreachable() -> None:
    server = ScriptedLLM()
    url = server.base_url
    server.stop()
    service = LLMService(remote_settings(url), Metrics())
    with pytest.raises(StartupError) as caught:
        await service.start()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("llm: model 'gpt' at http://127.0.0.1:")
    assert "unreachable" in message


async def test_a_default_local_model_is_loaded_at_start() -> None:
    service = LLMService(Settings(), Metrics())
    await service.start()
    try:
        local = service.router.route("local").provider
        assert isinstance(local, LocalProvider)
        assert local.loaded
        health = await service.health()
        assert health.status is HealthStatus.HEALTHY
        assert "local: loaded SmolLM2" in health.detail
    finally:
        await service.stop()


async def test_a_missing_default_local_model_fails_start(tmp_path: Path) -> None:
    settings = Settings(
        llm=LLMSettings(
            models={"local": ModelSettings(provider="local", path=tmp_path / "none.gguf")}
        )
    )
    with pytest.raises(StartupError, match=r"^llm: local: model file not found: .*none\.gguf$"):
        await LLMService(settings, Metrics()).start()


async def test_the_service_can_restart_on_the_same_metrics_registry(upstream: ScriptedLLM) -> None:
    service = LLMService(remote_settings(upstream.base_url), Metrics())
    for _ in range(2):
        await service.start()
        await service.stop()
