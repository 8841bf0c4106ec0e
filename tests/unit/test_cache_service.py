"""Backend selection from `cache.url`, redaction, and the in-process service lifecycle."""

from __future__ import annotations

import asyncio

import pytest

from soma.cache import CacheService, create_cache, describe
from soma.cache.memory import MemoryKeyValue
from soma.config.settings import Settings
from soma.core.errors import StartupError
from soma.core.service import HealthStatus, Service
from soma.observability.metrics import Metrics


def settings(url: str) -> Settings:
    return Settings.model_validate({"cache": {"url": url}})


async def test_memory_backend_is_a_healthy_service() -> None:
    service = create_cache(settings("memory://"), Metrics())
    assert isinstance(service, Service)
    assert service.name == "cache"
    assert isinstance(service.kv, MemoryKeyValue)
    await service.start()
    assert (await service.health()).status is HealthStatus.HEALTHY
    await service.streams.append("r", b"x")
    assert await service.streams.last_id("r") == 1
    await service.stop()


def test_default_settings_use_memory() -> None:
    assert isinstance(create_cache(Settings(), Metrics()), CacheService)
    assert describe(Settings()) == "in-process (memory://)"


@pytest.mark.parametrize("url", ["foo://bar", "redis://", "http://127.0.0.1:6379", "memory"])
def test_unsupported_urls_fail_clearly(url: str) -> None:
    with pytest.raises(StartupError, match=r"^cache: unsupported cache\.url"):
        create_cache(settings(url), Metrics())


def test_unsupported_url_error_hides_password() -> None:
    with pytest.raises(StartupError) as caught:
        create_cache(settings("foo://user:topsecret@host/0"), Metrics())
    assert "topsecret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@cache:6379/1", "redis redis://:***@cache:6379/1"),
        ("rediss://app:s3cret@cache.example:6380/0", "redis rediss://app:***@cache.example:6380/0"),
    ],
)
def test_describe_redacts_passwords(url: str, shown: str) -> None:
    assert describe(settings(url)) == shown


def test_redis_backend_is_constructed_without_connecting() -> None:
    service = create_cache(settings("redis://127.0.0.1:1/0"), Metrics())
    assert service.name == "cache"


async def test_an_idle_memory_cache_still_frees_finished_streams() -> None:
    metrics = Metrics()
    cache = Settings.model_validate({"cache": {"stream_grace_s": 0.2}})
    service = create_cache(cache, metrics)
    await service.start()
    try:
        await service.streams.append("run", b"terminal")
        await service.streams.finish("run")
        sample = metrics.registry.get_sample_value
        assert sample("soma_cache_streams", {}) == 1
        assert (sample("soma_cache_stream_bytes", {}) or 0) > len(b"terminal")
        # Nothing writes from here on: only the service's own sweep can free the stream.
        async with asyncio.timeout(30):
            while sample("soma_cache_streams", {}) != 0:
                await asyncio.sleep(0.05)
        assert sample("soma_cache_stream_bytes", {}) == 0
        assert sample("soma_cache_stream_evictions_total", {"reason": "expired"}) == 1
    finally:
        await service.stop()
