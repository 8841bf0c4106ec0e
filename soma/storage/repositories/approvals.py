"""Approvals: a human decision a tool call waits for (one per tool call)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Row

from soma.core.clock import utcnow
from soma.core.errors import ConflictError
from soma.core.ids import new_id
from soma.storage.repositories.base import Page, Repository, fetch_page, insert_or_ignore
from soma.storage.tables import approvals

PENDING = "pending"


@dataclass(frozen=True, slots=True)
class Approval:
    id: str
    tenant_id: str
    run_id: str
    tool_call_id: str
    status: str
    reason: str | None
    decided_by: str | None
    created_at: datetime
    decided_at: datetime | None


def _approval(row: Row[Any]) -> Approval:
    return Approval(
        id=row.id,
        tenant_id=row.tenant_id,
        run_id=row.run_id,
        tool_call_id=row.tool_call_id,
        status=row.status,
        reason=row.reason,
        decided_by=row.decided_by,
        created_at=row.created_at,
        decided_at=row.decided_at,
    )


class ApprovalRepository(Repository):
    __slots__ = ()

    async def create(
        self,
        tenant_id: str,
        *,
        run_id: str,
        tool_call_id: str,
        approval_id: str | None = None,
    ) -> tuple[Approval, bool]:
        """A pending approval, once per tool call; returns `(approval, inserted)`."""
        approval = Approval(
            id=approval_id or new_id(),
            tenant_id=tenant_id,
            run_id=run_id,
            tool_call_id=tool_call_id,
            status=PENDING,
            reason=None,
            decided_by=None,
            created_at=utcnow(),
            decided_at=None,
        )
        statement = insert_or_ignore(self._conn, approvals, ["tool_call_id"]).returning(
            approvals.c.id
        )
        values = {
            "id": approval.id,
            "tenant_id": tenant_id,
            "run_id": run_id,
            "tool_call_id": tool_call_id,
            "status": PENDING,
            "created_at": approval.created_at,
        }
        if (await self._conn.execute(statement, values)).first() is not None:
            return approval, True
        query = select(approvals).where(
            approvals.c.tenant_id == tenant_id, approvals.c.tool_call_id == tool_call_id
        )
        row = (await self._conn.execute(query)).first()
        if row is None:
            raise ConflictError("approval belongs to another tenant")
        return _approval(row), False

    async def get(self, tenant_id: str, approval_id: str) -> Approval | None:
        query = select(approvals).where(
            approvals.c.tenant_id == tenant_id, approvals.c.id == approval_id
        )
        row = (await self._conn.execute(query)).first()
        return None if row is None else _approval(row)

    async def list(
        self,
        tenant_id: str,
        limit: int,
        cursor: str | None = None,
        *,
        status: str | None = None,
    ) -> Page[Approval]:
        query = select(approvals).where(approvals.c.tenant_id == tenant_id)
        if status is not None:
            query = query.where(approvals.c.status == status)
        return await fetch_page(self._conn, query, approvals.c.id, limit, cursor, _approval)

    async def decide(
        self,
        tenant_id: str,
        approval_id: str,
        *,
        status: str,
        decided_by: str,
        reason: str | None = None,
    ) -> Approval | None:
        """Record the decision of a pending approval; None when not pending (or not found)."""
        statement = (
            update(approvals)
            .where(
                approvals.c.tenant_id == tenant_id,
                approvals.c.id == approval_id,
                approvals.c.status == PENDING,
            )
            .values(status=status, reason=reason, decided_by=decided_by, decided_at=utcnow())
            .returning(*approvals.c)
        )
        row = (await self._conn.execute(statement)).first()
        return None if row is None else _approval(row)
