"""What the gateway needs from other packages, as small protocols."""

from __future__ import annotations

from typing import Protocol


class KeyValue(Protocol):
    """A TTL key-value store; shared by every replica when it is Redis."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None: ...

    async def delete(self, key: str) -> bool: ...


class RateDecision(Protocol):
    @property
    def allowed(self) -> bool: ...

    @property
    def retry_after_s(self) -> float: ...


class RateLimiter(Protocol):
    """Token buckets; shared by every replica when it is Redis."""

    async def acquire(
        self, key: str, rate_per_s: float, burst: int, cost: int = 1
    ) -> RateDecision: ...
