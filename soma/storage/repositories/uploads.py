"""Uploaded files: metadata and checksum; the bytes live at `path` in the data dir."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Row

from soma.core.clock import utcnow
from soma.core.ids import new_id
from soma.storage.repositories.base import Page, Repository, fetch_page
from soma.storage.tables import uploads


@dataclass(frozen=True, slots=True)
class Upload:
    id: str
    tenant_id: str
    session_id: str | None
    filename: str
    content_type: str
    size: int
    sha256: str
    path: str
    metadata: dict[str, Any]
    created_at: datetime


def _upload(row: Row[Any]) -> Upload:
    return Upload(
        id=row.id,
        tenant_id=row.tenant_id,
        session_id=row.session_id,
        filename=row.filename,
        content_type=row.content_type,
        size=row.size,
        sha256=row.sha256,
        path=row.path,
        metadata=dict(row.metadata),
        created_at=row.created_at,
    )


_live = uploads.c.deleted_at.is_(None)


class UploadRepository(Repository):
    __slots__ = ()

    async def create(
        self,
        tenant_id: str,
        *,
        filename: str,
        content_type: str,
        size: int,
        sha256: str,
        path: str,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        upload_id: str | None = None,
    ) -> Upload:
        upload = Upload(
            id=upload_id or new_id(),
            tenant_id=tenant_id,
            session_id=session_id,
            filename=filename,
            content_type=content_type,
            size=size,
            sha256=sha256,
            path=path,
            metadata=dict(metadata or {}),
            created_at=utcnow(),
        )
        await self._conn.execute(
            insert(uploads),
            {
                "id": upload.id,
                "tenant_id": tenant_id,
                "session_id": session_id,
                "filename": filename,
                "content_type": content_type,
                "size": size,
                "sha256": sha256,
                "path": path,
                "metadata": upload.metadata,
                "created_at": upload.created_at,
            },
        )
        return upload

    async def get(self, tenant_id: str, upload_id: str) -> Upload | None:
        query = select(uploads).where(
            uploads.c.tenant_id == tenant_id, uploads.c.id == upload_id, _live
        )
        row = (await self._conn.execute(query)).first()
        return None if row is None else _upload(row)

    async def list(
        self,
        tenant_id: str,
        limit: int,
        cursor: str | None = None,
        *,
        session_id: str | None = None,
    ) -> Page[Upload]:
        query = select(uploads).where(uploads.c.tenant_id == tenant_id, _live)
        if session_id is not None:
            query = query.where(uploads.c.session_id == session_id)
        return await fetch_page(self._conn, query, uploads.c.id, limit, cursor, _upload)

    async def usage(self, tenant_id: str) -> tuple[int, int]:
        """Live uploads of the tenant, and the bytes they keep stored (shared bytes once)."""
        mine = (uploads.c.tenant_id == tenant_id, _live)
        stored = select(uploads.c.sha256, uploads.c.size).where(*mine).distinct().subquery()
        count = select(func.count()).where(*mine).select_from(uploads).scalar_subquery()
        size = select(func.coalesce(func.sum(stored.c.size), 0)).scalar_subquery()
        found, used = (await self._conn.execute(select(count, size))).one()
        return int(found), int(used)

    async def sharing(self, tenant_id: str, sha256: str) -> int:
        """Live uploads of the tenant with these bytes."""
        query = select(func.count()).where(
            uploads.c.tenant_id == tenant_id, uploads.c.sha256 == sha256, _live
        )
        return int((await self._conn.execute(query)).scalar_one())

    async def delete(self, tenant_id: str, upload_id: str) -> bool:
        """Soft delete; True when a live upload of this tenant was deleted now."""
        statement = (
            update(uploads)
            .where(uploads.c.tenant_id == tenant_id, uploads.c.id == upload_id, _live)
            .values(deleted_at=utcnow())
            .returning(uploads.c.id)
        )
        return (await self._conn.execute(statement)).first() is not None
