"""Limits while their quotas store is down: checks fail closed, bookkeeping after the fact
never fails the run it belongs to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from soma.config.governance import LimitsSettings
from soma.core.errors import UnavailableError
from soma.limits.governor import Limits
from soma.limits.port import Admission, Bucket, Taken


class DownQuotas:
    """Every call fails as the Redis adapter does while Redis restarts."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def _down(self, op: str) -> UnavailableError:
        self.calls.append(op)
        return UnavailableError("the limits store (Redis) cannot answer: connection refused")

    async def take(self, buckets: Sequence[Bucket]) -> Taken:
        raise self._down("take")

    async def admit(
        self, pool: str, member: str, cap: int, ttl_s: float, counter: str, budget: int | None
    ) -> Admission:
        raise self._down("admit")

    async def leave(self, pool: str, member: str) -> None:
        raise self._down("leave")

    async def spend(self, counter: str, amount: int, ttl_s: float) -> int:
        raise self._down("spend")

    async def spent(self, counter: str) -> int:
        raise self._down("spent")


class NoOverrides:
    async def tenant_limits(self, tenant_id: str) -> dict[str, Any] | None:
        return {}


def limits(quotas: DownQuotas, **settings: Any) -> Limits:
    return Limits(LimitsSettings(**settings), quotas, NoOverrides())


async def test_checks_fail_closed_while_the_store_is_down() -> None:
    quotas = DownQuotas()
    governor = limits(quotas, token_budget=1_000)
    with pytest.raises(UnavailableError):
        await governor.request("t1", "k1")
    with pytest.raises(UnavailableError):
        await governor.admit("t1", "r1")
    with pytest.raises(UnavailableError):
        await governor.tokens_left("t1")
    assert quotas.calls == ["take", "admit", "spent"]


async def test_bookkeeping_after_the_fact_does_not_raise() -> None:
    quotas = DownQuotas()
    governor = limits(quotas)
    await governor.release("t1", "r1")
    await governor.spend_tokens("t1", 42)
    assert quotas.calls == ["leave", "spend"]
