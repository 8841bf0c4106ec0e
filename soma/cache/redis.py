"""Redis cache adapters: KV and run streams on Redis Streams (quotas: `redis_quotas`)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from soma.cache.port import StreamEntry, check_entry_id, check_read, check_ttl
from soma.cache.redis_batch import ScriptBatcher, ScriptCall
from soma.cache.redis_notify import StreamNotifier
from soma.cache.redis_quotas import RedisQuotas

_CONNECT_TIMEOUT_S = 3.0
_COMMAND_TIMEOUT_S = 10.0
_POOL_WAIT_S = 10.0
_FIELD = b"d"

# The counter and the XADD move together, so ids are strictly increasing even with many
# appenders on many replicas. A lost counter (evicted) restarts from the stream. ARGV[4], when
# not empty, is an explicit id chosen by the writer, which must exceed the last one. KEYS[3]
# marks a finished stream: it keeps the end `finish` gave it, so a late append never revives it.
# ARGV[5], when not empty, is the channel that wakes blocked readers (ARGV[6]: the stream).
_APPEND = """
local id = tonumber(redis.call('GET', KEYS[2]) or '0')
if id == 0 then
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if last[1] ~= nil then
    id = tonumber(string.match(last[1][1], '%-(%d+)$'))
  end
end
if ARGV[4] ~= '' then
  local wanted = tonumber(ARGV[4])
  if wanted <= id then
    return redis.error_reply('ERR entry id ' .. ARGV[4] .. ' is not above the last id ' .. id)
  end
  id = wanted
else
  id = id + 1
end
redis.call('SET', KEYS[2], id)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '0-' .. string.format('%d', id), 'd', ARGV[1])
if ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[5], ARGV[6])
end
local left = redis.call('PTTL', KEYS[3])
if left > 0 then
  redis.call('PEXPIRE', KEYS[1], left)
  redis.call('PEXPIRE', KEYS[2], left)
else
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return id
"""

# Shortens (never lengthens) the life of a finished stream to the grace, and marks it finished.
_FINISH = """
local grace = tonumber(ARGV[1])
redis.call('SET', KEYS[3], '1', 'PX', grace)
for i = 1, 2 do
  local left = redis.call('PTTL', KEYS[i])
  if left == -1 or left > grace then
    redis.call('PEXPIRE', KEYS[i], grace)
  end
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 0
"""


def _checked(reply: Any) -> Any:
    """A script's reply, or its error raised (an id error as ValueError)."""
    if isinstance(reply, ResponseError):
        raise _id_error(reply)
    if isinstance(reply, Exception):
        raise reply
    return reply


def _pool(url: str, max_connections: int) -> BlockingConnectionPool:
    # One retry on a connection error only: a reply timeout may mean the script already ran,
    # and running INCR/XADD or a token take twice would double-count.
    return BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=_POOL_WAIT_S,
        socket_connect_timeout=_CONNECT_TIMEOUT_S,
        socket_timeout=_COMMAND_TIMEOUT_S,
        socket_keepalive=True,
        health_check_interval=30,
        protocol=2,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )


class RedisKeyValue:
    def __init__(self, client: Redis, prefix: str) -> None:
        self._client = client
        self._prefix = f"{prefix}kv:"

    async def get(self, key: str) -> bytes | None:
        value = await self._client.get(self._prefix + key)
        return None if value is None else _as_bytes(value)

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        check_ttl(ttl_s)
        px = None if ttl_s is None else max(1, math.ceil(ttl_s * 1000))
        await self._client.set(self._prefix + key, value, px=px)

    async def delete(self, key: str) -> bool:
        removed: int = await self._client.delete(self._prefix + key)
        return removed > 0


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _entry_id(raw: bytes | str) -> int:
    return int(_as_bytes(raw).rsplit(b"-", 1)[1])


def _entries(reply: Any) -> list[StreamEntry]:
    """Parse an XREAD reply of one stream, raw (RESP2 list) or callback-shaped (dict)."""
    if not reply:
        return []
    streams = list(reply.values()) if isinstance(reply, dict) else [item[1] for item in reply]
    entries: list[StreamEntry] = []
    for raw_id, fields in streams[0]:
        if not isinstance(fields, dict):
            fields = dict(zip(fields[::2], fields[1::2], strict=True))
        entries.append(StreamEntry(_entry_id(raw_id), fields[_FIELD]))
    return entries


class RedisRunStreams:
    """Run streams with ids `0-N`. Blocked readers hold no connection while they wait: one
    subscription per process wakes them when their stream is appended to."""

    def __init__(
        self,
        client: Redis,
        listener: Redis,
        prefix: str,
        maxlen: int,
        ttl_s: int,
        grace_s: float = 30.0,
    ) -> None:
        """`listener`: a client whose connections may wait without a reply timeout."""
        if maxlen < 1 or ttl_s < 1:
            raise ValueError("stream maxlen and ttl_s must be >= 1")
        check_ttl(grace_s)
        self._client = client
        self._prefix = f"{prefix}st:"
        self._maxlen = maxlen
        self._ttl_s = ttl_s
        self._grace_ms = max(1, math.ceil(grace_s * 1000))
        self._append = client.register_script(_APPEND)
        self._finish = client.register_script(_FINISH)
        self._batcher = ScriptBatcher(client)
        self.notifier = StreamNotifier(listener, f"{prefix}st:appended")

    def _keys(self, stream: str) -> tuple[str, str, str]:
        # The hash tag keeps the keys in one slot, as a script touching them all requires.
        key = f"{self._prefix}{{{stream}}}"
        return key, f"{key}:seq", f"{key}:fin"

    def _append_args(self, stream: str, data: bytes, entry_id: int | None, last: bool) -> list[Any]:
        explicit = "" if entry_id is None else str(entry_id)
        channel = self.notifier.channel if last else ""
        return [data, self._maxlen, self._ttl_s, explicit, channel, stream]

    async def append(self, stream: str, data: bytes, entry_id: int | None = None) -> int:
        check_entry_id(entry_id)
        args = self._append_args(stream, data, entry_id, last=True)
        (reply,) = await self._batcher.run([ScriptCall(self._append, self._keys(stream), args)])
        return int(_checked(reply))

    async def append_many(
        self, stream: str, entries: Sequence[tuple[bytes, int]], *, finish: bool = False
    ) -> None:
        """A step's events (and, with `finish`, the end of the stream), sent with whatever
        other runs append meanwhile: one round trip for them all."""
        keys = self._keys(stream)
        calls = []
        for index, (data, entry_id) in enumerate(entries):
            check_entry_id(entry_id)
            args = self._append_args(stream, data, entry_id, index == len(entries) - 1)
            calls.append(ScriptCall(self._append, keys, args))
        if finish:
            calls.append(ScriptCall(self._finish, keys, self._finish_args(stream)))
        for reply in await self._batcher.run(calls):
            _checked(reply)

    async def read(
        self, stream: str, after_id: int, limit: int = 100, block_s: float = 0
    ) -> list[StreamEntry]:
        check_read(after_id, limit, block_s)
        key = self._keys(stream)[0]
        start = f"0-{after_id}"
        if block_s == 0:
            return _entries(await self._client.xread({key: start}, count=limit))
        try:
            async with asyncio.timeout(block_s):
                async with self.notifier.watching(stream) as appended:
                    # Watching before reading: an append in between still sets the event.
                    found = _entries(await self._client.xread({key: start}, count=limit))
                    if found:
                        return found
                    await appended.wait()
        except TimeoutError:
            return []
        return _entries(await self._client.xread({key: start}, count=limit))

    async def last_id(self, stream: str) -> int:
        key, seq, _ = self._keys(stream)
        value = await self._client.get(seq)
        if value is not None:
            return int(value)
        last = await self._client.xrevrange(key, count=1)
        newest = last[0][0] if last else None
        return 0 if newest is None else _entry_id(newest)

    async def finish(self, stream: str) -> None:
        await self._finish(keys=list(self._keys(stream)), args=self._finish_args(stream))

    def _finish_args(self, stream: str) -> list[Any]:
        return [self._grace_ms, self.notifier.channel, self.notifier.ended(stream)]

    async def wait_finished(self, stream: str, timeout_s: float) -> bool:
        """One round trip to look, then nothing until the end is announced (or the timeout)."""
        try:
            async with asyncio.timeout(timeout_s):
                async with self.notifier.watching(stream, end=True) as ended:
                    if await self._client.exists(self._keys(stream)[2]):
                        return True
                    await ended.wait()
                    return True
        except TimeoutError:
            return False

    async def delete(self, stream: str) -> None:
        await self._client.delete(*self._keys(stream))


def _id_error(exc: ResponseError) -> Exception:
    if "is not above the last id" in str(exc):
        return ValueError(str(exc).removeprefix("ERR "))
    return exc


class RedisCache:
    """The connections of one Redis backend and the three adapters that share them."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int,
        stream_maxlen: int,
        stream_ttl_s: int,
        stream_grace_s: float = 30.0,
        prefix: str = "soma:",
    ) -> None:
        self._client = Redis.from_pool(_pool(url, max_connections))
        # One connection that only waits for notifications: no reply timeout on it.
        self._listener = Redis.from_url(
            url, socket_connect_timeout=_CONNECT_TIMEOUT_S, socket_keepalive=True, protocol=2
        )
        self.kv = RedisKeyValue(self._client, prefix)
        self.quotas = RedisQuotas(self._client, prefix)
        self.streams = RedisRunStreams(
            self._client, self._listener, prefix, stream_maxlen, stream_ttl_s, stream_grace_s
        )

    async def ping(self) -> None:
        await self._client.ping()

    async def aclose(self) -> None:
        await self.streams.notifier.close()
        await self._listener.aclose()
        await self._client.aclose()
