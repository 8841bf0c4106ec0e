"""The `cache` service: picks the in-process or Redis backend from `cache.url`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import SplitResult, urlsplit

from redis.exceptions import RedisError

from soma.cache.memory import MemoryKeyValue
from soma.cache.memory_quotas import MemoryQuotas
from soma.cache.memory_streams import MemoryRunStreams
from soma.cache.metered import meter_streams
from soma.cache.port import KeyValue, RunStreams
from soma.cache.redis import RedisCache
from soma.config.settings import Settings
from soma.core.errors import StartupError
from soma.core.service import Health
from soma.limits.port import Quotas
from soma.observability.metrics import Metrics

_PING_TIMEOUT_S = 3.0
_SWEEP_INTERVAL_S = 1.0
_REDIS_SCHEMES = ("redis", "rediss")


def _parse(url: str) -> SplitResult:
    parts = urlsplit(url)
    if parts.scheme == "memory" or (parts.scheme in _REDIS_SCHEMES and parts.hostname):
        return parts
    raise StartupError(
        f"cache: unsupported cache.url {_redact(url)!r}: "
        "expected memory:// or redis://host:port/db (rediss:// for TLS)"
    )


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def _address(parts: SplitResult) -> str:
    return f"{parts.hostname}:{parts.port or 6379}"


def describe(settings: Settings) -> str:
    """One line for the dry-run plan; never shows a password."""
    url = settings.cache.url.get_secret_value()
    parts = _parse(url)
    if parts.scheme == "memory":
        return "in-process (memory://)"
    return f"redis {_redact(url)}"


class CacheService:
    """Owns the backend connections and exposes `.kv`, `.quotas` and `.streams`."""

    def __init__(
        self,
        kv: KeyValue,
        quotas: Quotas,
        streams: RunStreams,
        redis: RedisCache | None = None,
        address: str = "",
        secret: str | None = None,
        sweep: Callable[[], None] | None = None,
    ) -> None:
        self.kv = kv
        self.quotas = quotas
        self.streams = streams
        self._redis = redis
        self._address = address
        self._secret = secret
        self._sweep = sweep
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return "cache"

    async def _ping(self, redis: RedisCache) -> str | None:
        """None when the server answers, else a reason safe to log."""
        try:
            async with asyncio.timeout(_PING_TIMEOUT_S):
                await redis.ping()
        except TimeoutError:
            return f"no answer within {_PING_TIMEOUT_S:g} s"
        except (RedisError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            return reason.replace(self._secret, "***") if self._secret else reason
        return None

    async def start(self) -> None:
        if self._sweep is not None and self._sweeper is None:
            sweeping = self._sweep_forever(self._sweep)
            self._sweeper = asyncio.create_task(sweeping, name="cache-sweep")
        if self._redis is None:
            return
        reason = await self._ping(self._redis)
        if reason is not None:
            raise StartupError(f"cache: cannot reach redis at {self._address}: {reason}")

    async def _sweep_forever(self, sweep: Callable[[], None]) -> None:
        """Expire in-process entries when nothing writes, so an idle replica frees them too."""
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL_S)
            sweep()

    async def stop(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()

    async def health(self) -> Health:
        if self._redis is None:
            return Health.healthy("in-process")
        reason = await self._ping(self._redis)
        if reason is not None:
            return Health.unhealthy(f"redis {self._address}: {reason}")
        return Health.healthy(f"redis {self._address}")


def create_cache(settings: Settings, metrics: Metrics) -> CacheService:
    """Build the service for `cache.url`; connects only in `start()`."""
    cache = settings.cache
    url = cache.url.get_secret_value()
    parts = _parse(url)
    if parts.scheme == "memory":
        streams = MemoryRunStreams(
            cache.stream_maxlen,
            cache.stream_ttl_s,
            grace_s=cache.stream_grace_s,
            max_bytes=cache.stream_max_bytes,
        )
        meter_streams(streams, metrics)
        return CacheService(MemoryKeyValue(), MemoryQuotas(), streams, sweep=streams.sweep)
    redis = RedisCache(
        url,
        max_connections=cache.max_connections,
        stream_maxlen=cache.stream_maxlen,
        stream_ttl_s=cache.stream_ttl_s,
        stream_grace_s=cache.stream_grace_s,
    )
    return CacheService(
        redis.kv,
        redis.quotas,
        redis.streams,
        redis=redis,
        address=_address(parts),
        secret=parts.password,
    )
