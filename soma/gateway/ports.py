"""What the gateway needs from other packages, as small protocols."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from soma.memory.model import Memory, NewMemory, Recalled, Scope
    from soma.memory.service import Remembered
    from soma.storage.repositories.base import Page as StoragePage


class KeyValue(Protocol):
    """A TTL key-value store; shared by every replica when it is Redis."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None: ...

    async def delete(self, key: str) -> bool: ...


class Memories(Protocol):
    """The memory service as the memory routes use it (soma.memory.service)."""

    async def recall(self, scope: Scope, query: str, k: int) -> list[Recalled]: ...

    async def remember(self, new: NewMemory, actor: str = ...) -> Remembered:
        """`actor`: who the audit entry of the write names."""
        ...

    async def get(self, tenant_id: str, memory_id: str) -> Memory | None: ...

    async def newest(
        self,
        tenant_id: str,
        limit: int,
        cursor: str | None = None,
        *,
        agent_id: str | None = None,
        user: str | None = None,
    ) -> StoragePage[Memory]: ...

    async def delete(self, tenant_id: str, memory_id: str, actor: str = ...) -> bool: ...

    async def forget_user(
        self, tenant_id: str, user: str, agent_id: str | None = None, actor: str = ...
    ) -> int: ...

    def export(
        self, tenant_id: str, *, agent_id: str | None = None, user: str | None = None
    ) -> AsyncIterator[Memory]: ...
