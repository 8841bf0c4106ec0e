"""Key verification with a short-lived cache that every replica shares and revocation clears."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

import orjson

from soma.gateway.auth.keys import key_matches, parse_prefix
from soma.gateway.auth.principal import Principal
from soma.gateway.metrics import GatewayMetrics
from soma.gateway.ports import KeyValue
from soma.storage.database import Database
from soma.storage.repositories import ApiKey

_log = logging.getLogger("soma.gateway.auth")
CACHE_PREFIX = "soma:gateway:apikey:"


class Verdict(StrEnum):
    OK = "ok"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    MISMATCH = "mismatch"


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


class KeyVerifier:
    """Turns a presented key into a Principal; `forget` makes a revocation visible at once."""

    def __init__(
        self, database: Database, kv: KeyValue, cache_ttl_s: float, metrics: GatewayMetrics
    ) -> None:
        self._database = database
        self._kv = kv
        self._ttl = cache_ttl_s
        self._metrics = metrics

    async def verify(self, presented: str) -> Verification:
        prefix = parse_prefix(presented)
        if prefix is None:
            return Verification(Verdict.MALFORMED)
        record = await self._record(prefix)
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
        await self._kv.delete(cache_key(prefix))

    async def _record(self, prefix: str) -> _Record | None:
        if self._ttl > 0:
            cached = await self._kv.get(cache_key(prefix))
            if cached is not None:
                try:
                    record = _Record.load(cached)
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    _log.warning("discarding an unreadable key cache entry")
                else:
                    self._metrics.cache_hits.inc()
                    return record
            self._metrics.cache_misses.inc()
        async with self._database.read() as uow:
            key = await uow.api_keys.lookup_by_prefix(prefix)
        if key is None:
            return None
        record = _Record.of(key)
        if self._ttl > 0:
            await self._kv.set(cache_key(prefix), record.dump(), self._ttl)
        return record
