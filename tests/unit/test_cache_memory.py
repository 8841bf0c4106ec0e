"""In-process cache adapters driven by a hand-moved clock: expiry, refill and sweeping."""

from __future__ import annotations

import asyncio

import pytest

from soma.cache.memory import MemoryKeyValue
from soma.cache.memory_quotas import MemoryQuotas
from soma.cache.memory_streams import MemoryRunStreams
from soma.limits.port import Bucket


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_kv_expires_exactly_at_ttl() -> None:
    clock = ManualClock()
    kv = MemoryKeyValue(clock)
    await kv.set("k", b"v", ttl_s=5)
    clock.now += 4.999
    assert await kv.get("k") == b"v"
    clock.now += 0.001
    assert await kv.get("k") is None
    assert await kv.delete("k") is False


async def test_kv_sweep_drops_expired_keys_nobody_reads() -> None:
    clock = ManualClock()
    kv = MemoryKeyValue(clock)
    for i in range(50):
        await kv.set(f"k{i}", b"v", ttl_s=1)
    clock.now += 2
    await kv.set("fresh", b"v")
    assert list(kv._items) == ["fresh"]


async def test_quota_bucket_refills_at_rate_up_to_burst() -> None:
    clock = ManualClock()
    quotas = MemoryQuotas(clock)
    bucket = [Bucket("k", rate_per_s=2, burst=3)]
    for expected in (2, 1, 0):
        taken = await quotas.take(bucket)
        assert (taken.allowed, taken.remaining) == (True, expected)
    denied = await quotas.take(bucket)
    assert (denied.allowed, denied.retry_after_s) == (False, pytest.approx(0.5))
    clock.now += 0.5
    assert (await quotas.take(bucket)).allowed
    clock.now += 100
    assert (await quotas.take(bucket)).remaining == 2


async def test_quota_retry_after_accounts_for_partial_tokens() -> None:
    clock = ManualClock()
    quotas = MemoryQuotas(clock)
    bucket = [Bucket("k", rate_per_s=4, burst=1)]
    assert (await quotas.take(bucket)).allowed
    clock.now += 0.125
    denied = await quotas.take(bucket)
    assert (denied.allowed, denied.remaining) == (False, 0)
    assert denied.retry_after_s == pytest.approx(0.125)


async def test_quota_sweep_forgets_only_full_buckets() -> None:
    clock = ManualClock()
    quotas = MemoryQuotas(clock)
    await quotas.take([Bucket("refilled", 1, 1), Bucket("slow", 1e-6, 1)])
    clock.now += 2
    await quotas.take([Bucket("trigger", 1, 1)])
    assert sorted(quotas._buckets) == ["slow", "trigger"]
    assert not (await quotas.take([Bucket("slow", 1e-6, 1)])).allowed


async def test_stream_ttl_is_refreshed_by_append() -> None:
    clock = ManualClock()
    streams = MemoryRunStreams(maxlen=5, ttl_s=10, clock=clock)
    await streams.append("s", b"1")
    clock.now += 9
    await streams.append("s", b"2")
    clock.now += 9
    assert [e.id for e in await streams.read("s", 0)] == [1, 2]
    clock.now += 1
    assert await streams.read("s", 0) == []
    assert await streams.last_id("s") == 0
    assert await streams.append("s", b"again") == 1


async def test_stream_trims_exactly_to_maxlen() -> None:
    streams = MemoryRunStreams(maxlen=5, ttl_s=60)
    for i in range(12):
        await streams.append("s", bytes([i]))
    assert [e.id for e in await streams.read("s", 0)] == [8, 9, 10, 11, 12]
    assert [e.id for e in await streams.read("s", 9, limit=2)] == [10, 11]


async def test_stream_waiters_are_released_after_timeout() -> None:
    streams = MemoryRunStreams(maxlen=5, ttl_s=60)
    results = await asyncio.gather(*(streams.read("s", 0, block_s=0.05) for _ in range(3)))
    assert results == [[], [], []]
    assert streams._waiters == {}


async def test_many_readers_all_wake_on_one_append() -> None:
    streams = MemoryRunStreams(maxlen=5, ttl_s=60)
    readers = [asyncio.create_task(streams.read("s", 0, block_s=60)) for _ in range(50)]
    await asyncio.sleep(0)
    assert not any(r.done() for r in readers)
    await streams.append("s", b"x")
    results = await asyncio.wait_for(asyncio.gather(*readers), timeout=5)
    assert all([e.data for e in r] == [b"x"] for r in results)


async def test_reader_keeps_waiting_when_the_stream_is_deleted_meanwhile() -> None:
    streams = MemoryRunStreams(maxlen=5, ttl_s=60)
    reader = asyncio.create_task(streams.read("s", 0, block_s=60))
    await asyncio.sleep(0)
    await streams.append("s", b"gone")
    await streams.delete("s")
    await asyncio.sleep(0)
    assert not reader.done()
    await streams.append("s", b"kept")
    entries = await asyncio.wait_for(reader, timeout=5)
    assert [(e.id, e.data) for e in entries] == [(1, b"kept")]
