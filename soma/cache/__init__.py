"""KV, per-run event streams and the quotas behind limits; in-process and Redis adapters."""

from soma.cache.port import KeyValue, RunStreams, StreamEntry
from soma.cache.service import CacheService, create_cache, describe

__all__ = [
    "CacheService",
    "KeyValue",
    "RunStreams",
    "StreamEntry",
    "create_cache",
    "describe",
]
