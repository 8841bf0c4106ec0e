"""Upload bytes on disk, content-addressed per tenant: `<root>/<tenant>/<sha[:2]>/<sha256>`.

Bytes are written to a temporary file while they arrive (hashed and counted on the way, never
held whole in memory) and moved into place only once their upload row is committed; the same
bytes uploaded twice by one tenant are stored once.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_READ_CHUNK = 64 * 1024


class TooLarge(Exception):
    """The bytes passed the allowed size; nothing is kept."""


@dataclass
class Incoming:
    """A file being received: append with `write`, then `commit` or `discard` it."""

    path: Path
    limit: int
    size: int = 0
    head: bytes = b""
    _hash: hashlib._Hash = field(default_factory=hashlib.sha256)

    async def write(self, data: bytes, head_bytes: int) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise TooLarge(f"the file is larger than {self.limit} bytes")
        if len(self.head) < head_bytes:
            self.head += data[: head_bytes - len(self.head)]
        self._hash.update(data)
        await asyncio.to_thread(_append, self.path, data)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as file:
        file.write(data)


class UploadFiles:
    """The upload directory; one lock per tenant and digest orders keeps against removals."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def path(self, tenant_id: str, sha256: str) -> Path:
        if not _SAFE.match(tenant_id) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError("not a tenant id and sha256 digest")
        return self._root / tenant_id / sha256[:2] / sha256

    @asynccontextmanager
    async def receiving(self, tenant_id: str, limit: int) -> AsyncIterator[Incoming]:
        """A temporary file; removed on exit unless `keep` moved it into place."""
        if not _SAFE.match(tenant_id):
            raise ValueError("not a tenant id")
        incoming_dir = self._root / tenant_id / ".incoming"
        await asyncio.to_thread(incoming_dir.mkdir, parents=True, exist_ok=True)
        incoming = Incoming(incoming_dir / uuid.uuid4().hex, limit)
        incoming.path.touch()
        try:
            yield incoming
        finally:
            await asyncio.to_thread(incoming.path.unlink, missing_ok=True)

    @asynccontextmanager
    async def guard(self, tenant_id: str, sha256: str) -> AsyncIterator[None]:
        """Hold while committing a row that needs the bytes, or deciding to remove them."""
        key = (tenant_id, sha256)
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._locks.get(key) is lock:
                del self._locks[key]

    async def keep(self, tenant_id: str, incoming: Incoming) -> Path:
        """Move the received bytes into place (call inside `guard`, after the commit)."""
        target = self.path(tenant_id, incoming.sha256)
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(os.replace, incoming.path, target)
        return target

    async def remove(self, tenant_id: str, sha256: str) -> None:
        await asyncio.to_thread(self.path(tenant_id, sha256).unlink, missing_ok=True)

    async def chunks(self, tenant_id: str, sha256: str) -> AsyncIterator[bytes]:
        path = self.path(tenant_id, sha256)
        file = await asyncio.to_thread(path.open, "rb")
        try:
            while chunk := await asyncio.to_thread(file.read, _READ_CHUNK):
                yield chunk
        finally:
            file.close()
