"""KV, per-run event streams and rate limiting; in-process and Redis adapters."""

from soma.cache.port import KeyValue, RateDecision, RateLimiter, RunStreams, StreamEntry
from soma.cache.service import CacheService, create_cache, describe

__all__ = [
    "CacheService",
    "KeyValue",
    "RateDecision",
    "RateLimiter",
    "RunStreams",
    "StreamEntry",
    "create_cache",
    "describe",
]
