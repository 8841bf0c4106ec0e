"""What limits need from the cache: token buckets taken together, counted pools, counters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Bucket:
    key: str
    rate_per_s: float
    burst: int


@dataclass(frozen=True, slots=True)
class Taken:
    """The outcome of taking one token from several buckets; figures of the tightest one."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    """Until the tightest bucket is full again."""
    retry_after_s: float
    """0 when allowed; else until every bucket has a token."""


class Admission(IntEnum):
    ADMITTED = 0
    FULL = 1
    """The pool already holds `cap` members."""
    SPENT = 2
    """The counter reached the budget."""


class Quotas(Protocol):
    async def take(self, buckets: Sequence[Bucket]) -> Taken:
        """One token from every bucket, or none from any when one is empty (atomic)."""
        ...

    async def admit(
        self, pool: str, member: str, cap: int, ttl_s: float, counter: str, budget: int | None
    ) -> Admission:
        """Add `member` to `pool` unless it holds `cap` members or `counter` >= `budget`.

        Members leave after `ttl_s` unless `leave` removes them first; a member already in the
        pool is admitted again (a retry).
        """
        ...

    async def leave(self, pool: str, member: str) -> None: ...

    async def spend(self, counter: str, amount: int, ttl_s: float) -> int:
        """Add `amount` to `counter` (created with `ttl_s`); the new total."""
        ...

    async def spent(self, counter: str) -> int: ...
