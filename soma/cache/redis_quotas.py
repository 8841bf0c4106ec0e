"""Quotas on Redis: each operation one script, so every replica shares them exactly."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from soma.cache.redis_batch import ScriptBatcher, ScriptCall
from soma.core.errors import UnavailableError
from soma.limits.port import Admission, Bucket, Taken

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _unavailable(
    method: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Redis down or restarting is 'cannot serve right now' (503 + Retry-After), not a crash."""

    @functools.wraps(method)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise UnavailableError(f"the limits store (Redis) cannot answer: {exc}") from None

    return wrapper


# All buckets refilled by the server's clock; a token taken from each only if each has one.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local levels = {}
local ok = 1
local retry = 0
for i = 1, #KEYS do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local s = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tokens = tonumber(s[1])
  local ts = tonumber(s[2])
  if tokens == nil or ts == nil then
    tokens = burst
    ts = now
  end
  local elapsed = now - ts
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(burst, tokens + elapsed * rate)
  levels[i] = tokens
  if tokens < 1 then
    ok = 0
    local wait = (1 - tokens) / rate
    if wait > retry then retry = wait end
  end
end
local limit, left, reset = 0, nil, 0
for i = 1, #KEYS do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tokens = levels[i]
  if ok == 1 then tokens = tokens - 1 end
  redis.call('HSET', KEYS[i], 'tokens', string.format('%.17g', tokens),
             'ts', string.format('%.6f', now))
  redis.call('PEXPIRE', KEYS[i], math.ceil((burst - tokens) / rate * 1000) + 1000)
  if left == nil or math.floor(tokens) < left then
    left = math.floor(tokens)
    limit = burst
    reset = (burst - tokens) / rate
  end
end
return {ok, limit, left, string.format('%.17g', reset), string.format('%.17g', retry)}
"""

# Expired members go first, so a replica that died after admitting holds its slot no longer
# than the ttl.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[4] ~= '' and tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[4]) then
  return 2
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not known and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 1
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 0
"""

_SPEND = """
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return total
"""


class RedisQuotas:
    def __init__(self, client: Redis, prefix: str) -> None:
        self._client = client
        self._prefix = f"{prefix}q:"
        self._take = client.register_script(_TAKE)
        self._admit = client.register_script(_ADMIT)
        self._spend = client.register_script(_SPEND)
        # Checks of concurrent requests share one pipeline: a round trip each costs the
        # client far more CPU than Redis spends on the scripts.
        self._batcher = ScriptBatcher(client)

    async def _run(self, call: ScriptCall) -> Any:
        (reply,) = await self._batcher.run([call])
        if isinstance(reply, Exception):
            raise reply
        return reply

    @_unavailable
    async def take(self, buckets: Sequence[Bucket]) -> Taken:
        args: list[str | int] = []
        for bucket in buckets:
            args += [repr(float(bucket.rate_per_s)), bucket.burst]
        keys = [self._prefix + b.key for b in buckets]
        ok, limit, left, reset, retry = await self._run(ScriptCall(self._take, keys, args))
        return Taken(bool(int(ok)), int(limit), max(0, int(left)), float(reset), float(retry))

    @_unavailable
    async def admit(
        self, pool: str, member: str, cap: int, ttl_s: float, counter: str, budget: int | None
    ) -> Admission:
        keys = [self._prefix + pool, self._prefix + counter]
        args: list[str | int] = [
            member, cap, max(1, round(ttl_s * 1000)), "" if budget is None else budget
        ]  # fmt: skip
        return Admission(int(await self._run(ScriptCall(self._admit, keys, args))))

    @_unavailable
    async def leave(self, pool: str, member: str) -> None:
        await self._client.zrem(self._prefix + pool, member)

    @_unavailable
    async def spend(self, counter: str, amount: int, ttl_s: float) -> int:
        args = [amount, max(1, round(ttl_s * 1000))]
        return int(await self._spend(keys=[self._prefix + counter], args=args))

    @_unavailable
    async def spent(self, counter: str) -> int:
        value = await self._client.get(self._prefix + counter)
        return 0 if value is None else int(value)
