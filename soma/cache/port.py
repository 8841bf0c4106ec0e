"""Cache ports: key-value and per-run event streams (quotas: `soma.limits.port`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StreamEntry:
    id: int
    data: bytes


class KeyValue(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None: ...

    async def delete(self, key: str) -> bool:
        """Remove `key`; true when it existed."""
        ...


class RunStreams(Protocol):
    async def append(self, stream: str, data: bytes, entry_id: int | None = None) -> int:
        """Append an entry at the next id (1, 2, 3, ... per stream) or at `entry_id`.

        An explicit `entry_id` lets a writer keep its own numbering (ids may then have gaps);
        it must exceed the stream's last id, else ValueError.
        """
        ...

    async def append_many(
        self, stream: str, entries: Sequence[tuple[bytes, int]], *, finish: bool = False
    ) -> None:
        """Append `(data, entry_id)` pairs in order (one round trip where the backend allows);
        with `finish`, then `finish(stream)`."""
        ...

    async def read(
        self, stream: str, after_id: int, limit: int = 100, block_s: float = 0
    ) -> list[StreamEntry]:
        """Entries with id > `after_id`; waits up to `block_s` for the next append if none."""
        ...

    async def last_id(self, stream: str) -> int: ...

    async def wait_finished(self, stream: str, timeout_s: float) -> bool:
        """True once `finish(stream)` was called (now or before), False after `timeout_s`."""
        ...

    async def finish(self, stream: str) -> None:
        """The stream's terminal entry is appended: keep it only `cache.stream_grace_s` more.

        Call once, after that append. Appends that still follow never extend its life.
        """
        ...

    async def delete(self, stream: str) -> None: ...


def check_ttl(ttl_s: float | None) -> None:
    if ttl_s is not None and not (ttl_s > 0 and math.isfinite(ttl_s)):
        raise ValueError(f"ttl_s must be a positive finite number or None, got {ttl_s!r}")


def check_entry_id(entry_id: int | None) -> None:
    if entry_id is not None and entry_id < 1:
        raise ValueError(f"entry_id must be >= 1, got {entry_id!r}")


def check_read(after_id: int, limit: int, block_s: float) -> None:
    if after_id < 0:
        raise ValueError(f"after_id must be >= 0, got {after_id!r}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit!r}")
    if not (block_s >= 0 and math.isfinite(block_s)):
        raise ValueError(f"block_s must be a finite number >= 0, got {block_s!r}")
