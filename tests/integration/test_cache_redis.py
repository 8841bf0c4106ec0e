"""Redis-only behaviour: sharing across clients, many blocked readers, startup and health."""

from __future__ import annotations

import asyncio
import socket

import pytest
import redis.asyncio as aredis

from soma.cache import create_cache
from soma.cache.redis import RedisCache
from soma.cache.redis_batch import ScriptCall
from soma.config.settings import Settings
from soma.core.errors import StartupError
from soma.core.service import HealthStatus
from soma.limits.port import Bucket
from soma.observability.metrics import Metrics

pytestmark = pytest.mark.integration


def redis_cache(url: str, max_connections: int = 8) -> RedisCache:
    return RedisCache(url, max_connections=max_connections, stream_maxlen=100, stream_ttl_s=60)


async def wait_for_blocked(cache: RedisCache, count: int) -> None:
    """Until `count` readers wait on this process's notifier (holding no connection)."""
    for _ in range(500):
        if cache.streams.notifier.waiting >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {count} readers blocked")


async def test_a_bucket_is_exact_across_two_clients(clean_redis_url: str) -> None:
    first, second = redis_cache(clean_redis_url), redis_cache(clean_redis_url)
    shared = [Bucket("shared", rate_per_s=1e-6, burst=25)]
    try:
        calls = [cache.quotas.take(shared) for _ in range(100) for cache in (first, second)]
        taken = await asyncio.gather(*calls)
    finally:
        await first.aclose()
        await second.aclose()
    assert len(taken) == 200
    assert sum(t.allowed for t in taken) == 25


async def test_stream_ids_unique_across_two_clients(clean_redis_url: str) -> None:
    first, second = redis_cache(clean_redis_url), redis_cache(clean_redis_url)
    try:
        ids = await asyncio.gather(
            *(c.streams.append("run", b"x") for _ in range(50) for c in (first, second))
        )
        entries = await first.streams.read("run", 0, limit=1000)
    finally:
        await first.aclose()
        await second.aclose()
    assert sorted(ids) == list(range(1, 101))
    assert [e.id for e in entries] == list(range(1, 101))


async def test_many_blocked_readers_do_not_starve_commands(clean_redis_url: str) -> None:
    cache = redis_cache(clean_redis_url, max_connections=4)
    try:
        readers = [asyncio.create_task(cache.streams.read("hot", 0, block_s=60)) for _ in range(20)]
        await wait_for_blocked(cache, 20)
        # Twenty readers wait on a pool of four: they hold no connection while they do.
        await cache.kv.set("still", b"works")
        assert await cache.kv.get("still") == b"works"
        assert (await cache.quotas.take([Bucket("k", rate_per_s=1, burst=1)])).allowed
        assert await cache.streams.append("hot", b"news") == 1
        results = await asyncio.wait_for(asyncio.gather(*readers), timeout=20)
    finally:
        await cache.aclose()
    assert all([(e.id, e.data) for e in result] == [(1, b"news")] for result in results)


async def test_cancelled_reader_leaves_the_pool_usable(clean_redis_url: str) -> None:
    cache = redis_cache(clean_redis_url, max_connections=1)
    try:
        reader = asyncio.create_task(cache.streams.read("c", 0, block_s=60))
        await wait_for_blocked(cache, 1)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        await cache.streams.append("c", b"one")
        second = asyncio.create_task(cache.streams.read("c", 1, block_s=60))
        await wait_for_blocked(cache, 1)
        await cache.streams.append("c", b"two")
        entries = await asyncio.wait_for(second, timeout=10)
    finally:
        await cache.aclose()
    assert [(e.id, e.data) for e in entries] == [(2, b"two")]


async def test_a_reader_waiting_on_one_stream_delays_no_other(clean_redis_url: str) -> None:
    cache = redis_cache(clean_redis_url, max_connections=1)
    try:
        holder = asyncio.create_task(cache.streams.read("other", 0, block_s=60))
        await wait_for_blocked(cache, 1)
        assert await cache.streams.read("idle", 0, block_s=0.2) == []
        await cache.streams.append("other", b"release")
        assert len(await asyncio.wait_for(holder, timeout=10)) == 1
    finally:
        await cache.aclose()


async def test_readers_wake_when_notifications_were_lost(clean_redis_url: str) -> None:
    cache = redis_cache(clean_redis_url)
    raw = aredis.Redis.from_url(clean_redis_url)
    try:
        reader = asyncio.create_task(cache.streams.read("lost", 0, block_s=60))
        await wait_for_blocked(cache, 1)
        await raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        # The append lands while nobody is subscribed; resubscribing makes readers look again.
        assert await cache.streams.append("lost", b"found") == 1
        entries = await asyncio.wait_for(reader, timeout=10)
    finally:
        await raw.aclose()
        await cache.aclose()
    assert [(e.id, e.data) for e in entries] == [(1, b"found")]


async def test_stream_keys_carry_the_ttl(clean_redis_url: str) -> None:
    cache = redis_cache(clean_redis_url)
    raw = aredis.Redis.from_url(clean_redis_url)
    try:
        await cache.streams.append("t", b"x")
        keys = sorted(await raw.keys("soma:st:*"))
        assert keys == [b"soma:st:{t}", b"soma:st:{t}:seq"]
        for key in keys:
            assert 0 < await raw.ttl(key) <= 60
    finally:
        await raw.aclose()
        await cache.aclose()


async def test_lost_counter_continues_after_the_stream(clean_redis_url: str) -> None:
    cache = redis_cache(clean_redis_url)
    raw = aredis.Redis.from_url(clean_redis_url)
    try:
        for _ in range(3):
            await cache.streams.append("e", b"x")
        await raw.delete("soma:st:{e}:seq")
        assert await cache.streams.last_id("e") == 3
        assert await cache.streams.append("e", b"y") == 4
    finally:
        await raw.aclose()
        await cache.aclose()


async def test_service_health_and_start(clean_redis_url: str) -> None:
    settings = Settings.model_validate({"cache": {"url": clean_redis_url}})
    service = create_cache(settings, Metrics())
    assert service.name == "cache"
    await service.start()
    try:
        health = await service.health()
    finally:
        await service.stop()
    assert health.status is HealthStatus.HEALTHY
    assert health.detail.startswith("redis 127.0.0.1:")


async def test_wrong_password_fails_start_without_leaking_it(clean_redis_url: str) -> None:
    url = clean_redis_url.replace("redis://", "redis://:hunter2secret@")
    service = create_cache(Settings.model_validate({"cache": {"url": url}}), Metrics())
    with pytest.raises(StartupError) as caught:
        await service.start()
    await service.stop()
    message = str(caught.value)
    assert message.startswith("cache: cannot reach redis at 127.0.0.1:")
    assert "hunter2secret" not in message


async def test_unreachable_redis_fails_start_and_health() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"redis://:pw-not-shown@127.0.0.1:{port}/0"
    service = create_cache(Settings.model_validate({"cache": {"url": url}}), Metrics())
    with pytest.raises(StartupError, match=rf"^cache: cannot reach redis at 127\.0\.0\.1:{port}: "):
        await service.start()
    health = await service.health()
    await service.stop()
    assert health.status is HealthStatus.UNHEALTHY
    assert "pw-not-shown" not in health.detail


async def test_finish_shortens_every_key_of_the_stream_to_the_grace(clean_redis_url: str) -> None:
    cache = RedisCache(clean_redis_url, max_connections=8, stream_maxlen=100,
                       stream_ttl_s=3600, stream_grace_s=30)  # fmt: skip
    raw = aredis.Redis.from_url(clean_redis_url)
    try:
        await cache.streams.append("t", b"x")
        await cache.streams.finish("t")
        keys = sorted(await raw.keys("soma:st:*"))
        assert keys == [b"soma:st:{t}", b"soma:st:{t}:fin", b"soma:st:{t}:seq"]
        for key in keys:
            assert 0 < await raw.pttl(key) <= 30_000
        await cache.streams.append("t", b"late")
        for key in keys:
            assert 0 < await raw.pttl(key) <= 30_000
        await cache.streams.delete("t")
        assert await raw.keys("soma:st:*") == []
    finally:
        await raw.aclose()
        await cache.aclose()


async def test_concurrent_appends_share_round_trips(clean_redis_url: str) -> None:
    cache = redis_cache(clean_redis_url)
    streams = cache.streams
    batcher = streams._batcher
    sent: list[int] = []
    execute = batcher._execute

    async def counting(calls: list[ScriptCall]) -> list[object]:
        sent.append(len(calls))
        return await execute(calls)

    batcher._execute = counting  # type: ignore[method-assign]
    try:
        await asyncio.gather(
            *(
                streams.append_many(f"run{i}", [(b"a", 1), (b"b", 2)], finish=True)
                for i in range(100)
            )
        )
        for i in (0, 99):
            assert [e.data for e in await streams.read(f"run{i}", 0)] == [b"a", b"b"]
        with pytest.raises(ValueError, match="not above the last id"):
            await streams.append_many("run5", [(b"late", 2)])
    finally:
        await cache.aclose()
    assert sum(sent) == 100 * 3 + 1  # every call sent once ...
    assert len(sent) <= 3  # ... in a few pipelines, not one per run


async def test_appends_survive_a_script_flush(clean_redis_url: str) -> None:
    cache = redis_cache(clean_redis_url)
    try:
        await cache.streams.append_many("flushed", [(b"one", 1)])
        await cache._client.script_flush()
        await cache.streams.append_many("flushed", [(b"two", 2)], finish=True)
        assert await cache.streams.append("flushed", b"three") == 3
        assert [e.data for e in await cache.streams.read("flushed", 0)] == [
            b"one",
            b"two",
            b"three",
        ]
    finally:
        await cache.aclose()
