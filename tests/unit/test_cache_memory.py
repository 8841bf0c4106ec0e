"""In-process cache adapters driven by a hand-moved clock: expiry, refill and sweeping."""

from __future__ import annotations

import asyncio
import threading

import pytest

from soma.cache.memory import MemoryKeyValue, MemoryRateLimiter
from soma.cache.memory_streams import MemoryRunStreams


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


async def test_limiter_refills_at_rate_up_to_burst() -> None:
    clock = ManualClock()
    limiter = MemoryRateLimiter(clock)
    for expected in (2, 1, 0):
        decision = await limiter.acquire("k", rate_per_s=2, burst=3)
        assert (decision.allowed, decision.remaining) == (True, expected)
    denied = await limiter.acquire("k", rate_per_s=2, burst=3)
    assert (denied.allowed, denied.retry_after_s) == (False, pytest.approx(0.5))
    clock.now += 0.5
    assert (await limiter.acquire("k", rate_per_s=2, burst=3)).allowed
    clock.now += 100
    assert (await limiter.acquire("k", rate_per_s=2, burst=3)).remaining == 2


async def test_limiter_retry_after_accounts_for_partial_tokens() -> None:
    clock = ManualClock()
    limiter = MemoryRateLimiter(clock)
    assert (await limiter.acquire("k", rate_per_s=4, burst=4, cost=4)).allowed
    clock.now += 0.25
    denied = await limiter.acquire("k", rate_per_s=4, burst=4, cost=3)
    assert (denied.allowed, denied.remaining) == (False, 1)
    assert denied.retry_after_s == pytest.approx(0.5)


async def test_limiter_exact_from_many_threads() -> None:
    limiter = MemoryRateLimiter()
    allowed: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        results = [
            asyncio.run(limiter.acquire("t", rate_per_s=1e-6, burst=40)).allowed for _ in range(25)
        ]
        with lock:
            allowed.extend(results)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == 200
    assert sum(allowed) == 40


async def test_limiter_sweep_forgets_only_full_buckets() -> None:
    clock = ManualClock()
    limiter = MemoryRateLimiter(clock)
    await limiter.acquire("refilled", rate_per_s=1, burst=1)
    await limiter.acquire("slow", rate_per_s=1e-6, burst=1)
    clock.now += 2
    await limiter.acquire("trigger", rate_per_s=1, burst=1)
    assert sorted(limiter._buckets) == ["slow", "trigger"]
    assert not (await limiter.acquire("slow", rate_per_s=1e-6, burst=1)).allowed


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
