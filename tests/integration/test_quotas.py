"""The quotas behind limits, on the in-process and the Redis backend alike: buckets taken
together, the pool of runs in flight, token counters."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from soma.cache import CacheService, create_cache
from soma.config.settings import Settings
from soma.limits.port import Admission, Bucket
from soma.observability.metrics import Metrics

pytestmark = pytest.mark.integration


@pytest.fixture
async def cache(cache_url: str) -> AsyncIterator[CacheService]:
    service = create_cache(Settings.model_validate({"cache": {"url": cache_url}}), Metrics())
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def name(kind: str) -> str:
    return f"{kind}:{{{uuid.uuid4().hex}}}"


async def test_buckets_are_taken_together_or_not_at_all(cache: CacheService) -> None:
    key, tenant = Bucket(name("key"), 0.001, 3), Bucket(name("tenant"), 0.001, 5)
    taken = [await cache.quotas.take([key, tenant]) for _ in range(4)]
    assert [t.allowed for t in taken] == [True, True, True, False]
    assert [t.remaining for t in taken] == [2, 1, 0, 0]
    assert taken[0].limit == 3  # the tightest bucket is reported
    assert taken[-1].retry_after_s > 0
    # The refused request took nothing from the tenant: 2 of its 5 tokens are left.
    other_key = Bucket(name("key"), 0.001, 10)
    assert [(await cache.quotas.take([other_key, tenant])).allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]


async def test_concurrent_takes_never_exceed_the_burst(cache: CacheService) -> None:
    bucket = Bucket(name("tenant"), 0.001, 20)
    taken = await asyncio.gather(*(cache.quotas.take([bucket]) for _ in range(50)))
    assert sum(t.allowed for t in taken) == 20
    # Each take saw the one before it: no two callers were told the same tokens were left.
    assert sorted(t.remaining for t in taken if t.allowed) == list(range(20))
    assert all(t.remaining == 0 and t.retry_after_s > 100 for t in taken if not t.allowed)


async def test_an_empty_bucket_allows_again_after_retry_after(cache: CacheService) -> None:
    bucket = [Bucket(name("refill"), 20, 1)]
    assert (await cache.quotas.take(bucket)).allowed
    denied = await cache.quotas.take(bucket)
    assert not denied.allowed
    assert 0 < denied.retry_after_s <= 0.05
    await asyncio.sleep(denied.retry_after_s + 0.05)
    assert (await cache.quotas.take(bucket)).allowed


async def test_pool_caps_members_and_frees_them(cache: CacheService) -> None:
    pool, counter = name("inflight"), name("tok")
    admit = cache.quotas.admit
    assert await admit(pool, "r1", 2, 60, counter, None) is Admission.ADMITTED
    assert await admit(pool, "r2", 2, 60, counter, None) is Admission.ADMITTED
    assert await admit(pool, "r1", 2, 60, counter, None) is Admission.ADMITTED  # a retry
    assert await admit(pool, "r3", 2, 60, counter, None) is Admission.FULL
    await cache.quotas.leave(pool, "r1")
    await cache.quotas.leave(pool, "r1")  # leaving twice is harmless
    assert await admit(pool, "r3", 2, 60, counter, None) is Admission.ADMITTED
    # Members expire: a replica that died after admitting holds no slot forever.
    short = name("inflight")
    assert await admit(short, "a", 1, 0.2, counter, None) is Admission.ADMITTED
    assert await admit(short, "b", 1, 0.2, counter, None) is Admission.FULL
    await asyncio.sleep(0.4)
    assert await admit(short, "b", 1, 0.2, counter, None) is Admission.ADMITTED


async def test_token_counters_and_budgets(cache: CacheService) -> None:
    pool, counter = name("inflight"), name("tok")
    assert await cache.quotas.spent(counter) == 0
    assert await cache.quotas.spend(counter, 7, 60) == 7
    assert await cache.quotas.spend(counter, 5, 60) == 12
    assert await cache.quotas.spent(counter) == 12
    assert await cache.quotas.admit(pool, "r", 10, 60, counter, 13) is Admission.ADMITTED
    await cache.quotas.spend(counter, 1, 60)
    assert await cache.quotas.admit(pool, "s", 10, 60, counter, 13) is Admission.SPENT
