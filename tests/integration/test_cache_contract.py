"""The cache contract, run against the in-process and the Redis backend alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from soma.cache import CacheService, create_cache
from soma.config.settings import Settings
from soma.observability.metrics import Metrics

pytestmark = pytest.mark.integration


def make_settings(url: str, **cache: object) -> Settings:
    return Settings.model_validate({"cache": {"url": url, **cache}})


@pytest.fixture
async def cache(cache_url: str) -> AsyncIterator[CacheService]:
    service = create_cache(make_settings(cache_url, stream_maxlen=10, stream_ttl_s=1), Metrics())
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def wait_until_blocked(cache: CacheService, reader: asyncio.Task[object]) -> None:
    """Return once the reader is parked (on Redis: waiting on the process's notifier)."""
    notifier = getattr(cache.streams, "notifier", None)
    for _ in range(400):
        await asyncio.sleep(0.01)
        assert not reader.done(), "reader returned before anything was appended"
        if notifier is None or notifier.waiting >= 1:
            return
    raise AssertionError("reader never blocked")


async def test_kv_set_get_delete(cache: CacheService) -> None:
    assert await cache.kv.get("k") is None
    await cache.kv.set("k", b"\x00value\xff")
    assert await cache.kv.get("k") == b"\x00value\xff"
    await cache.kv.set("k", b"v2")
    assert await cache.kv.get("k") == b"v2"
    assert await cache.kv.delete("k") is True
    assert await cache.kv.delete("k") is False
    assert await cache.kv.get("k") is None


async def test_kv_ttl_expires(cache: CacheService) -> None:
    await cache.kv.set("short", b"x", ttl_s=0.2)
    await cache.kv.set("long", b"y", ttl_s=60)
    await cache.kv.set("forever", b"z")
    assert await cache.kv.get("short") == b"x"
    await asyncio.sleep(0.4)
    assert await cache.kv.get("short") is None
    assert await cache.kv.get("long") == b"y"
    assert await cache.kv.get("forever") == b"z"


async def test_kv_rejects_bad_ttl(cache: CacheService) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        await cache.kv.set("k", b"v", ttl_s=0)


async def test_stream_append_and_read_after_id(cache: CacheService) -> None:
    assert await cache.streams.last_id("run-1") == 0
    assert await cache.streams.read("run-1", 0) == []
    ids = [await cache.streams.append("run-1", f"e{i}".encode()) for i in range(1, 6)]
    assert ids == [1, 2, 3, 4, 5]
    assert await cache.streams.last_id("run-1") == 5
    everything = await cache.streams.read("run-1", 0)
    assert [(e.id, e.data) for e in everything] == [(i, f"e{i}".encode()) for i in range(1, 6)]
    assert [e.id for e in await cache.streams.read("run-1", 3)] == [4, 5]
    assert [e.id for e in await cache.streams.read("run-1", 1, limit=2)] == [2, 3]
    assert await cache.streams.read("run-1", 5) == []
    assert await cache.streams.last_id("run-2") == 0


async def test_stream_ids_strictly_increasing_under_concurrency(cache: CacheService) -> None:
    ids = await asyncio.gather(*(cache.streams.append("c", str(i).encode()) for i in range(10)))
    assert sorted(ids) == list(range(1, 11))
    entries = await cache.streams.read("c", 0)
    assert [e.id for e in entries] == list(range(1, 11))
    assert sorted(int(e.data) for e in entries) == list(range(10))


async def test_blocking_read_wakes_on_append(cache: CacheService, cache_url: str) -> None:
    await cache.streams.append("w", b"old")
    reader = asyncio.create_task(cache.streams.read("w", 1, block_s=60))
    await wait_until_blocked(cache, reader)
    await cache.streams.append("w", b"new")
    entries = await asyncio.wait_for(reader, timeout=10)
    assert [(e.id, e.data) for e in entries] == [(2, b"new")]


async def test_blocking_read_on_empty_stream_times_out_empty(cache: CacheService) -> None:
    assert await cache.streams.read("nothing", 0, block_s=0.1) == []


async def test_stream_is_bounded_oldest_trimmed(cache: CacheService) -> None:
    for i in range(1, 301):
        assert await cache.streams.append("big", str(i).encode()) == i
    entries = await cache.streams.read("big", 0, limit=1000)
    # Redis trims whole nodes of up to 100 entries (MAXLEN ~), the memory adapter exactly.
    assert 10 <= len(entries) <= 110
    assert [e.id for e in entries] == list(range(301 - len(entries), 301))
    assert [e.data for e in entries[-3:]] == [b"298", b"299", b"300"]
    assert await cache.streams.last_id("big") == 300


async def test_stream_expires_after_ttl_and_delete(cache: CacheService) -> None:
    await cache.streams.append("ttl", b"a")
    await cache.streams.append("gone", b"b")
    await cache.streams.delete("gone")
    assert await cache.streams.last_id("gone") == 0
    assert await cache.streams.read("gone", 0) == []
    assert await cache.streams.append("gone", b"c") == 1
    await asyncio.sleep(1.3)
    assert await cache.streams.read("ttl", 0) == []
    assert await cache.streams.last_id("ttl") == 0


async def test_stream_explicit_ids_may_skip_but_never_go_back(cache: CacheService) -> None:
    streams = cache.streams
    assert await streams.append("gaps", b"queued", 1) == 1
    assert await streams.append("gaps", b"started", 1_000_001) == 1_000_001
    assert await streams.append("gaps", b"next") == 1_000_002
    with pytest.raises(ValueError, match="not above the last id"):
        await streams.append("gaps", b"stale", 5)
    entries = await streams.read("gaps", 1)
    assert [(e.id, e.data) for e in entries] == [(1_000_001, b"started"), (1_000_002, b"next")]
    assert [e.id for e in await streams.read("gaps", 1_000_001)] == [1_000_002]
    assert await streams.read("gaps", 0, limit=1) == [entries[0].__class__(1, b"queued")]


async def test_a_finished_stream_lives_only_its_grace(cache_url: str) -> None:
    settings = make_settings(cache_url, stream_ttl_s=60, stream_grace_s=0.5)
    service = create_cache(settings, Metrics())
    await service.start()
    try:
        streams = service.streams
        await streams.append("done", b"delta", 1)
        await streams.append("done", b"terminal", 2)
        await streams.append("running", b"delta", 1)
        await streams.finish("done")
        assert [e.id for e in await streams.read("done", 0)] == [1, 2]
        await streams.append("done", b"straggler", 3)  # must not give it the full TTL again
        await asyncio.sleep(1.0)
        assert await streams.read("done", 0) == []
        assert await streams.last_id("done") == 0
        assert [e.id for e in await streams.read("running", 0)] == [1]
    finally:
        await service.stop()


async def test_append_many_appends_in_order_and_can_finish(cache: CacheService) -> None:
    await cache.streams.append_many("m", [(b"one", 3), (b"two", 7)])
    await cache.streams.append_many("m", [(b"three", 9)], finish=True)
    entries = await cache.streams.read("m", 0)
    assert [(e.id, e.data) for e in entries] == [(3, b"one"), (7, b"two"), (9, b"three")]
    with pytest.raises(ValueError, match="not above the last id"):
        await cache.streams.append_many("m", [(b"late", 8)])


async def test_append_many_wakes_a_blocked_reader(cache: CacheService) -> None:
    reader = asyncio.create_task(cache.streams.read("mw", 0, block_s=60))
    await wait_until_blocked(cache, reader)
    await cache.streams.append_many("mw", [(b"a", 1), (b"b", 2)])
    entries = await asyncio.wait_for(reader, timeout=10)
    assert [e.data for e in entries][:1] == [b"a"]


async def test_wait_finished_wakes_on_the_end_only(cache: CacheService) -> None:
    streams = cache.streams
    waiter = asyncio.create_task(streams.wait_finished("wf", 60))
    await wait_until_blocked(cache, waiter)
    await streams.append("wf", b"delta", 1)
    await asyncio.sleep(0.2)
    assert not waiter.done(), "an append is not the end"
    await streams.append_many("wf", [(b"terminal", 2)], finish=True)
    assert await asyncio.wait_for(waiter, timeout=10) is True
    # Already finished: answered at once; never finished: False after the timeout.
    assert await asyncio.wait_for(streams.wait_finished("wf", 60), timeout=10) is True
    assert await streams.wait_finished("never", 0.2) is False
