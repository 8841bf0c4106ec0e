"""Key verification caches (in-process, shared, negative) and the failed-auth rate limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from soma.cache.memory import MemoryKeyValue
from soma.cache.memory_quotas import MemoryQuotas
from soma.config.settings import AuthSettings
from soma.gateway.auth.guard import FailedAuthGuard
from soma.gateway.auth.issuer import issue_key, revoke_key
from soma.gateway.auth.keys import generate_key
from soma.gateway.auth.local_cache import LocalCache
from soma.gateway.auth.verifier import KeyVerifier, Verdict
from soma.gateway.metrics import GatewayMetrics
from soma.observability.metrics import Metrics
from soma.storage import DatabaseService
from soma.storage.database import Database
from soma.storage.repositories.api_keys import ApiKeyRepository
from tests.support.gateway_app import GatewayHarness, gateway_settings, running_gateway

PROBLEM = "application/problem+json"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class CountingKeyValue:
    """The shared cache, counting round trips."""

    inner: MemoryKeyValue
    gets: int = 0
    sets: list[str] = field(default_factory=list)

    async def get(self, key: str) -> bytes | None:
        self.gets += 1
        return await self.inner.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        self.sets.append(key)
        await self.inner.set(key, value, ttl_s)

    async def delete(self, key: str) -> bool:
        return await self.inner.delete(key)


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every database lookup of a key prefix, in order."""
    seen: list[str] = []
    original = ApiKeyRepository.lookup_by_prefix

    async def counting(self: ApiKeyRepository, prefix: str) -> Any:
        seen.append(prefix)
        return await original(self, prefix)

    monkeypatch.setattr(ApiKeyRepository, "lookup_by_prefix", counting)
    yield seen


@dataclass
class Keys:
    database: Database
    tenant_id: str
    admin_key: str
    chat_key: str
    chat_key_id: str


@pytest.fixture
async def keys(tmp_path: Path) -> AsyncIterator[Keys]:
    settings = gateway_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'soma.db'}")
    service = DatabaseService(settings, Metrics())
    await service.start()
    database = service.database
    async with database.transaction() as uow:
        tenant = await uow.tenants.create("default")
        admin = await issue_key(uow, tenant.id, name="a", scopes=["admin"], actor="t")
        chat = await issue_key(uow, tenant.id, name="c", scopes=["chat"], actor="t")
    yield Keys(database, tenant.id, admin.plaintext, chat.plaintext, chat.key.id)
    await service.stop()


def verifier(
    keys: Keys, kv: CountingKeyValue, clock: Clock, **auth: Any
) -> tuple[KeyVerifier, Metrics]:
    metrics = Metrics()
    built = KeyVerifier(keys.database, kv, AuthSettings(**auth), GatewayMetrics(metrics), clock)
    return built, metrics


async def test_an_unknown_prefix_is_looked_up_once_per_negative_ttl(
    keys: Keys, lookups: list[str]
) -> None:
    clock = Clock()
    kv = CountingKeyValue(MemoryKeyValue(clock))
    check, _ = verifier(keys, kv, clock, negative_cache_ttl_s=10)
    unknown = generate_key().plaintext
    for _ in range(5):
        assert (await check.verify(unknown)).verdict is Verdict.UNKNOWN
        clock.now += 1  # past the local TTL each time: the shared negative entry answers
    assert len(lookups) == 1
    clock.now += 10
    assert (await check.verify(unknown)).verdict is Verdict.UNKNOWN
    assert len(lookups) == 2


async def test_a_second_replica_learns_an_unknown_prefix_from_the_shared_cache(
    keys: Keys, lookups: list[str]
) -> None:
    clock = Clock()
    kv = CountingKeyValue(MemoryKeyValue(clock))
    one, _ = verifier(keys, kv, clock)
    two, _ = verifier(keys, kv, clock)
    unknown = generate_key().plaintext
    assert (await one.verify(unknown)).verdict is Verdict.UNKNOWN
    assert (await two.verify(unknown)).verdict is Verdict.UNKNOWN
    assert len(lookups) == 1


async def test_a_valid_key_skips_the_shared_cache_within_the_local_ttl(
    keys: Keys, lookups: list[str]
) -> None:
    clock = Clock()
    kv = CountingKeyValue(MemoryKeyValue(clock))
    check, metrics = verifier(keys, kv, clock, local_cache_ttl_s=0.5)
    first = await check.verify(keys.chat_key)
    assert first.verdict is Verdict.OK and first.principal is not None
    assert (kv.gets, len(lookups)) == (1, 1)
    for _ in range(10):
        assert (await check.verify(keys.chat_key)).verdict is Verdict.OK
    assert (kv.gets, len(lookups)) == (1, 1)
    clock.now += 0.5
    assert (await check.verify(keys.chat_key)).verdict is Verdict.OK
    assert (kv.gets, len(lookups)) == (2, 1)  # the shared cache answered, not the database
    exposition = metrics.exposition().decode()
    assert 'soma_gateway_key_cache_total{result="local_hit"} 10.0' in exposition


async def test_a_wrong_secret_is_refused_from_the_cache_too(keys: Keys) -> None:
    clock = Clock()
    check, _ = verifier(keys, CountingKeyValue(MemoryKeyValue(clock)), clock)
    assert (await check.verify(keys.chat_key)).verdict is Verdict.OK
    forged = keys.chat_key[:-4] + ("aaaa" if not keys.chat_key.endswith("aaaa") else "bbbb")
    assert (await check.verify(forged)).verdict is Verdict.MISMATCH


async def test_revocation_is_immediate_here_and_within_the_local_ttl_on_other_replicas(
    keys: Keys,
) -> None:
    clock = Clock()
    kv = CountingKeyValue(MemoryKeyValue(clock))
    here, _ = verifier(keys, kv, clock, local_cache_ttl_s=0.5)
    there, _ = verifier(keys, kv, clock, local_cache_ttl_s=0.5)
    assert (await here.verify(keys.chat_key)).verdict is Verdict.OK
    assert (await there.verify(keys.chat_key)).verdict is Verdict.OK
    revoked = await revoke_key(
        keys.database, here, keys.tenant_id, keys.chat_key_id, actor="t", keep_admin_of="x"
    )
    assert revoked is not None and revoked.revoked
    assert (await here.verify(keys.chat_key)).verdict is Verdict.REVOKED
    # The documented delay: another replica's in-process entry lives out its TTL.
    assert (await there.verify(keys.chat_key)).verdict is Verdict.OK
    clock.now += 0.5
    assert (await there.verify(keys.chat_key)).verdict is Verdict.REVOKED


async def test_without_lookup_only_cached_keys_are_verified(keys: Keys, lookups: list[str]) -> None:
    clock = Clock()
    check, _ = verifier(keys, CountingKeyValue(MemoryKeyValue(clock)), clock)
    assert (await check.verify(keys.chat_key)).verdict is Verdict.OK
    assert (await check.verify(keys.chat_key, lookup=False)).verdict is Verdict.OK
    assert (await check.verify(keys.admin_key, lookup=False)).verdict is Verdict.UNCHECKED
    assert (await check.verify(generate_key().plaintext, lookup=False)).verdict is (
        Verdict.UNCHECKED
    )
    assert (await check.verify("soma_short", lookup=False)).verdict is Verdict.MALFORMED
    assert len(lookups) == 1


def test_the_local_cache_is_bounded_and_expires() -> None:
    clock = Clock()
    cache: LocalCache[int] = LocalCache(3, clock)
    for n in range(3):
        cache.put(f"k{n}", n, 1.0)
    assert cache.get("k0") == (True, 0)  # k0 is now the most recently used
    cache.put("k3", 3, 1.0)
    assert len(cache) == 3
    assert cache.get("k1") == (False, None)  # the least recently used went
    assert cache.get("k0") == (True, 0)
    clock.now += 1.0
    assert cache.get("k0") == (False, None)
    cache.put("zero", 0, 0)
    assert cache.get("zero") == (False, None)


async def test_failed_auth_is_a_token_bucket_per_address() -> None:
    clock = Clock()
    guard = FailedAuthGuard(MemoryQuotas(clock), rate_per_s=0.5, burst=3, clock=clock)
    assert [await guard.failed("10.0.0.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await guard.failed("10.0.0.1")
    assert wait == pytest.approx(2.0)
    assert guard.blocked_for("10.0.0.1") == pytest.approx(2.0)
    assert guard.blocked_for("10.0.0.2") == 0.0
    assert await guard.failed("10.0.0.2") == 0.0
    clock.now += 2.0
    assert guard.blocked_for("10.0.0.1") == 0.0
    assert await guard.failed("10.0.0.1") == 0.0  # one token refilled
    assert await guard.failed("10.0.0.1") > 0


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[GatewayHarness]:
    settings = gateway_settings(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'soma.db'}",
        auth={"failed_auth_burst": 5, "failed_auth_rate_per_s": 0.01},
    )
    async with running_gateway(settings) as harness:
        yield harness


async def test_too_many_failures_answer_429_but_a_valid_key_still_works(
    limited: GatewayHarness, lookups: list[str]
) -> None:
    async with limited.client(limited.admin_key) as http:
        assert (await http.get("/v1/agents")).status_code == 200  # an active client's key
    bad = [generate_key().plaintext for _ in range(8)]
    statuses = []
    for key in bad:
        async with limited.client(key) as http:
            statuses.append(await http.get("/v1/agents"))
    assert [r.status_code for r in statuses] == [401] * 5 + [429] * 3
    limited_answer = statuses[-1]
    assert limited_answer.headers["content-type"] == PROBLEM
    assert int(limited_answer.headers["retry-after"]) >= 1
    assert limited_answer.json()["status"] == 429
    # The sixth failure found the bucket empty; once blocked, unknown prefixes cost no lookup.
    assert len([p for p in lookups if p != limited.admin_key[5:17]]) == 6
    async with limited.client(limited.admin_key) as http:
        assert (await http.get("/v1/agents")).status_code == 200  # served from the cache
    async with limited.client() as http:
        missing = await http.get("/v1/agents")  # no key at all is not a failed attempt
    assert missing.status_code == 401
    exposition = limited.metrics.exposition().decode()
    assert 'soma_gateway_auth_total{result="limited"} 3.0' in exposition
