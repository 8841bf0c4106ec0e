"""Runs: one agent turn, its status, attempts and the lease of the worker executing it."""

from __future__ import annotations

import builtins
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import Row

from soma.core.clock import utcnow
from soma.core.ids import new_id
from soma.storage.repositories.base import Page, Repository, check_limit, fetch_page
from soma.storage.tables import runs


@dataclass(frozen=True, slots=True)
class Run:
    id: str
    tenant_id: str
    session_id: str
    agent_id: str
    message_id: str | None
    status: str
    attempt: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    usage: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    steps: int = 0
    """Tool steps taken (each resumes with a new attempt that is not a retry)."""

    @property
    def retries(self) -> int:
        """Attempts beyond the first that were not continuations after a tool step."""
        return max(self.attempt - self.steps - 1, 0)


def _run(row: Row[Any]) -> Run:
    return Run(
        id=row.id,
        tenant_id=row.tenant_id,
        session_id=row.session_id,
        agent_id=row.agent_id,
        message_id=row.message_id,
        status=row.status,
        attempt=row.attempt,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        usage=row.usage,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        steps=row.steps,
    )


_UNSET: Any = object()
_INSERT = insert(runs)


class RunRepository(Repository):
    __slots__ = ()

    async def create(
        self,
        tenant_id: str,
        *,
        session_id: str,
        agent_id: str,
        message_id: str | None = None,
        status: str = "queued",
        run_id: str | None = None,
    ) -> Run:
        run = Run(
            id=run_id or new_id(),
            tenant_id=tenant_id,
            session_id=session_id,
            agent_id=agent_id,
            message_id=message_id,
            status=status,
            attempt=0,
            lease_owner=None,
            lease_expires_at=None,
            usage=None,
            error=None,
            created_at=utcnow(),
            started_at=None,
            finished_at=None,
        )
        await self._conn.execute(
            _INSERT,
            {
                "id": run.id,
                "tenant_id": tenant_id,
                "session_id": session_id,
                "agent_id": agent_id,
                "message_id": message_id,
                "status": status,
                "attempt": 0,
                "created_at": run.created_at,
            },
        )
        return run

    async def get(self, tenant_id: str, run_id: str) -> Run | None:
        query = select(runs).where(runs.c.tenant_id == tenant_id, runs.c.id == run_id)
        row = (await self._conn.execute(query)).first()
        return None if row is None else _run(row)

    async def list(
        self,
        tenant_id: str,
        limit: int,
        cursor: str | None = None,
        *,
        session_id: str | None = None,
        statuses: Collection[str] | None = None,
        created_before: datetime | None = None,
    ) -> Page[Run]:
        """Oldest first (ids are time-ordered), optionally filtered."""
        query = select(runs).where(runs.c.tenant_id == tenant_id)
        if session_id is not None:
            query = query.where(runs.c.session_id == session_id)
        if statuses is not None:
            query = query.where(runs.c.status.in_(list(statuses)))
        if created_before is not None:
            query = query.where(runs.c.created_at < created_before)
        return await fetch_page(self._conn, query, runs.c.id, limit, cursor, _run)

    async def update_status(
        self,
        tenant_id: str,
        run_id: str,
        status: str,
        *,
        expected: Collection[str] | None = None,
        error: str | None = _UNSET,
        usage: dict[str, Any] | None = _UNSET,
        started_at: datetime | None = _UNSET,
        finished_at: datetime | None = _UNSET,
        release_lease: bool = False,
        count_step: bool = False,
        next_check_at: datetime | None = _UNSET,
    ) -> Run | None:
        """Set the status (only from `expected` ones when given); None when nothing matched.

        `count_step`: the run took a tool step. `next_check_at`: when recovery should look at
        it again (kept in `lease_expires_at`, with no owner) if nobody moved it on by then.
        """
        values: dict[str, Any] = {"status": status}
        if count_step:
            values["steps"] = runs.c.steps + 1
        for name, value in (
            ("error", error),
            ("usage", usage),
            ("started_at", started_at),
            ("finished_at", finished_at),
        ):
            if value is not _UNSET:
                values[name] = value
        if release_lease:
            values.update(lease_owner=None, lease_expires_at=None)
        if next_check_at is not _UNSET:
            values.update(lease_owner=None, lease_expires_at=next_check_at)
        statement = update(runs).where(runs.c.tenant_id == tenant_id, runs.c.id == run_id)
        if expected is not None:
            statement = statement.where(runs.c.status.in_(list(expected)))
        row = (await self._conn.execute(statement.values(**values).returning(*runs.c))).first()
        return None if row is None else _run(row)

    async def claim(
        self,
        tenant_id: str,
        run_id: str,
        *,
        owner: str,
        lease_until: datetime,
        from_statuses: Collection[str],
        status: str = "running",
    ) -> Run | None:
        """Take the lease when the run is in `from_statuses` and unleased, expired or ours.

        Counts an attempt and stamps `started_at` the first time; None when not claimable.
        """
        now = utcnow()
        statement = (
            update(runs)
            .where(
                runs.c.tenant_id == tenant_id,
                runs.c.id == run_id,
                runs.c.status.in_(list(from_statuses)),
                or_(
                    runs.c.lease_owner.is_(None),
                    runs.c.lease_owner == owner,
                    runs.c.lease_expires_at < now,
                ),
            )
            .values(
                status=status,
                attempt=runs.c.attempt + 1,
                lease_owner=owner,
                lease_expires_at=lease_until,
                started_at=func.coalesce(runs.c.started_at, now),
            )
            .returning(*runs.c)
        )
        row = (await self._conn.execute(statement)).first()
        return None if row is None else _run(row)

    async def renew_lease(
        self, tenant_id: str, run_id: str, *, owner: str, lease_until: datetime
    ) -> bool:
        """Extend our lease; False when it is no longer ours."""
        statement = (
            update(runs)
            .where(runs.c.tenant_id == tenant_id, runs.c.id == run_id, runs.c.lease_owner == owner)
            .values(lease_expires_at=lease_until)
            .returning(runs.c.id)
        )
        return (await self._conn.execute(statement)).first() is not None

    async def release_lease(self, tenant_id: str, run_id: str, *, owner: str) -> bool:
        statement = (
            update(runs)
            .where(runs.c.tenant_id == tenant_id, runs.c.id == run_id, runs.c.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
            .returning(runs.c.id)
        )
        return (await self._conn.execute(statement)).first() is not None

    async def list_expired_leases(
        self, tenant_id: str, *, now: datetime, statuses: Collection[str], limit: int
    ) -> builtins.list[Run]:
        """Runs in `statuses` whose lease ran out before `now`, oldest lease first."""
        query = (
            select(runs)
            .where(
                runs.c.tenant_id == tenant_id,
                runs.c.status.in_(list(statuses)),
                runs.c.lease_expires_at < now,
            )
            .order_by(runs.c.lease_expires_at)
            .limit(check_limit(limit))
        )
        return [_run(row) for row in (await self._conn.execute(query)).all()]

    async def list_stalled(
        self, tenant_id: str, *, now: datetime, queued_before: datetime, limit: int
    ) -> builtins.list[Run]:
        """Unfinished runs (no `finished_at`) that nobody is progressing, oldest first.

        That is: a lease (or a requeue's next check) that ran out before `now`, or a queued run
        never claimed nor checked, created before `queued_before`.
        """
        query = (
            select(runs)
            .where(
                runs.c.tenant_id == tenant_id,
                runs.c.finished_at.is_(None),
                or_(
                    runs.c.lease_expires_at < now,
                    and_(
                        runs.c.lease_expires_at.is_(None),
                        runs.c.status == "queued",
                        runs.c.created_at < queued_before,
                    ),
                ),
            )
            .order_by(runs.c.id)
            .limit(check_limit(limit))
        )
        return [_run(row) for row in (await self._conn.execute(query)).all()]

    async def requeue(
        self,
        tenant_id: str,
        run_id: str,
        *,
        expected: Collection[str],
        expected_attempt: int,
        next_check_at: datetime,
        status: str = "queued",
    ) -> Run | None:
        """Drop the lease and set `status`, if still in `expected` at `expected_attempt`.

        `next_check_at` is kept in `lease_expires_at` (with no owner) so `list_stalled` looks
        at the run again only after then. None when the run moved on meanwhile.
        """
        statement = (
            update(runs)
            .where(
                runs.c.tenant_id == tenant_id,
                runs.c.id == run_id,
                runs.c.status.in_(list(expected)),
                runs.c.attempt == expected_attempt,
            )
            .values(status=status, lease_owner=None, lease_expires_at=next_check_at)
            .returning(*runs.c)
        )
        row = (await self._conn.execute(statement)).first()
        return None if row is None else _run(row)
