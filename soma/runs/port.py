"""What runs need from the cache: an event stream per run and a small key-value store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class StreamEntryLike(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def data(self) -> bytes: ...


class EventStreams(Protocol):
    async def append(self, stream: str, data: bytes, entry_id: int | None = None) -> int:
        """Append at `entry_id` (must exceed the last id) or at the next id."""
        ...

    async def append_many(
        self, stream: str, entries: Sequence[tuple[bytes, int]], *, finish: bool = False
    ) -> None:
        """Append `(data, entry_id)` pairs in one go; with `finish`, end the stream too."""
        ...

    async def read(
        self, stream: str, after_id: int, limit: int = 100, block_s: float = 0
    ) -> Sequence[StreamEntryLike]: ...

    async def wait_finished(self, stream: str, timeout_s: float) -> bool:
        """True once `finish(stream)` was called (now or before), False after `timeout_s`."""
        ...

    async def finish(self, stream: str) -> None:
        """Call once after the terminal event is appended: the stream may go after a grace."""
        ...


class Flags(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None: ...


class RunAdmission(Protocol):
    """Counts a tenant's runs in flight (and refuses them past its limits)."""

    async def admit(self, tenant_id: str, run_id: str) -> None:
        """Raises when the tenant may not start another run now."""
        ...

    async def release(self, tenant_id: str, run_id: str) -> None: ...
