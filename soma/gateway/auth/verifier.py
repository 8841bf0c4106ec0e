"""Key verification behind two caches: a sub-second one in this process, and a short-lived one
every replica shares; both remember unknown prefixes too, and revocation clears them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import orjson

from soma.config.settings import AuthSettings
from soma.gateway.auth.keys import key_matches, parse_prefix
from soma.gateway.auth.local_cache import LocalCache
from soma.gateway.auth.principal import Principal
from soma.gateway.metrics import GatewayMetrics
from soma.gateway.ports import KeyValue
from soma.storage.database import Database
from soma.storage.repositories import ApiKey

_log = logging.getLogger("soma.gateway.auth")
CACHE_PREFIX = "soma:gateway:apikey:"
UNKNOWN: Final = b"unknown"
"""What the shared cache holds for a prefix no key has."""


class Verdict(StrEnum):
    OK = "ok"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    MISMATCH = "mismatch"
    UNCHECKED = "unchecked"
    """Not in any cache, and the caller did not allow a database lookup."""


@dataclass(frozen=True, slots=True)
class Verification:
    verdict: Verdict
    principal: Principal | None = None


@dataclass(frozen=True, slots=True)
class _Record:
    """What the cache holds per prefix: enough to verify without the database."""

    key_id: str
    tenant_id: str
    scopes: tuple[str, ...]
    secret_hash: str
    revoked: bool

    @classmethod
    def of(cls, key: ApiKey) -> _Record:
        return cls(key.id, key.tenant_id, key.scopes, key.secret_hash, key.revoked)

    def dump(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.key_id,
                "tenant_id": self.tenant_id,
                "scopes": list(self.scopes),
                "hash": self.secret_hash,
                "revoked": self.revoked,
            }
        )

    @classmethod
    def load(cls, data: bytes) -> _Record:
        raw = orjson.loads(data)
        return cls(raw["id"], raw["tenant_id"], tuple(raw["scopes"]), raw["hash"], raw["revoked"])


def cache_key(prefix: str) -> str:
    return CACHE_PREFIX + prefix


class _Unchecked:
    """The prefix is in no cache and the database was not asked."""


_UNCHECKED = _Unchecked()


class KeyVerifier:
    """Turns a presented key into a Principal; `forget` makes a revocation visible at once
    here, in the shared cache at once, and in other replicas' local caches within
    `auth.local_cache_ttl_s`."""

    def __init__(
        self,
        database: Database,
        kv: KeyValue,
        settings: AuthSettings,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._database = database
        self._kv = kv
        self._ttl = settings.key_cache_ttl_s
        self._negative_ttl = settings.negative_cache_ttl_s
        self._local_ttl = settings.local_cache_ttl_s
        self._local: LocalCache[_Record | None] = LocalCache(settings.local_cache_size, clock)
        self._metrics = metrics

    async def verify(self, presented: str, *, lookup: bool = True) -> Verification:
        """Check `presented`; without `lookup`, a key in no cache is UNCHECKED (no database)."""
        prefix = parse_prefix(presented)
        if prefix is None:
            return Verification(Verdict.MALFORMED)
        record = await self._record(prefix, lookup)
        if isinstance(record, _Unchecked):
            return Verification(Verdict.UNCHECKED)
        if record is None:
            return Verification(Verdict.UNKNOWN)
        # The hash is checked before the revocation flag so that a revoked-key answer is only
        # ever given to someone who holds that key.
        if not key_matches(presented, record.secret_hash):
            return Verification(Verdict.MISMATCH)
        if record.revoked:
            return Verification(Verdict.REVOKED)
        principal = Principal(record.tenant_id, record.key_id, frozenset(record.scopes))
        return Verification(Verdict.OK, principal)

    async def forget(self, prefix: str) -> None:
        """Drop the cached record so the next request on any replica reads the database."""
        self._local.discard(prefix)
        await self._kv.delete(cache_key(prefix))

    async def _record(self, prefix: str, lookup: bool) -> _Record | _Unchecked | None:
        found, local = self._local.get(prefix)
        if found:
            self._metrics.cache_local_hits.inc()
            return local
        shared = await self._shared(prefix)
        if not isinstance(shared, _Unchecked):
            self._remember_locally(prefix, shared)
            return shared
        if not lookup:
            return _UNCHECKED
        async with self._database.read() as uow:
            key = await uow.api_keys.lookup_by_prefix(prefix)
        record = None if key is None else _Record.of(key)
        ttl = self._ttl if record is not None else self._negative_ttl
        if ttl > 0:
            await self._kv.set(cache_key(prefix), UNKNOWN if record is None else record.dump(), ttl)
        self._remember_locally(prefix, record)
        return record

    async def _shared(self, prefix: str) -> _Record | _Unchecked | None:
        """The shared cache's entry: a record, None for a known-unknown prefix, or nothing."""
        if self._ttl <= 0 and self._negative_ttl <= 0:
            return _UNCHECKED
        cached = await self._kv.get(cache_key(prefix))
        if cached == UNKNOWN:
            self._metrics.cache_hits.inc()
            return None
        if cached is not None:
            try:
                record = _Record.load(cached)
            except (orjson.JSONDecodeError, KeyError, TypeError):
                _log.warning("discarding an unreadable key cache entry")
            else:
                self._metrics.cache_hits.inc()
                return record
        self._metrics.cache_misses.inc()
        return _UNCHECKED

    def _remember_locally(self, prefix: str, record: _Record | None) -> None:
        ttl = self._local_ttl if record is not None else min(self._local_ttl, self._negative_ttl)
        self._local.put(prefix, record, ttl)
