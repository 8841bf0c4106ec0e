"""A run store that tells the run admission when runs end, whichever path ends them."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from soma.runs.events import RunEvent
from soma.runs.port import RunAdmission
from soma.runs.store import Acceptance, Claim, Claimed, Completion, Finish, RunStore
from soma.storage.repositories.agents import Agent
from soma.storage.repositories.messages import Message
from soma.storage.repositories.runs import Run
from soma.storage.repositories.sessions import Session


class CountedRunStore:
    """Delegates to `store`; a completed or finished run leaves the tenant's runs in flight."""

    def __init__(self, store: RunStore, admission: RunAdmission) -> None:
        self._store = store
        self._admission = admission

    async def accept(self, acceptance: Acceptance) -> Message:
        return await self._store.accept(acceptance)

    async def claim(self, claim: Claim) -> Claimed | None:
        return await self._store.claim(claim)

    async def complete(self, completion: Completion) -> Run | None:
        run = await self._store.complete(completion)
        if run is not None:
            await self._admission.release(run.tenant_id, run.id)
        return run

    async def finish(self, finish: Finish) -> Run | None:
        run = await self._store.finish(finish)
        if run is not None:
            await self._admission.release(run.tenant_id, run.id)
        return run

    async def renew_leases(
        self, owner: str, run_ids: Collection[str], lease_until: datetime
    ) -> set[str]:
        return await self._store.renew_leases(owner, run_ids, lease_until)

    async def hand_back(self, tenant_id: str, run_id: str, owner: str) -> bool:
        return await self._store.hand_back(tenant_id, run_id, owner)

    async def session_agent(
        self, tenant_id: str, session_id: str
    ) -> tuple[Session, Agent | None] | None:
        return await self._store.session_agent(tenant_id, session_id)

    async def run_reply(self, tenant_id: str, run_id: str) -> tuple[Run, Message | None] | None:
        return await self._store.run_reply(tenant_id, run_id)

    async def events_after(
        self, tenant_id: str, run_id: str, after_id: int, limit: int
    ) -> list[RunEvent]:
        return await self._store.events_after(tenant_id, run_id, after_id, limit)
