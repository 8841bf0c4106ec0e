"""Tool executions and refusals are in the tenant's audit chain, written with their results:
once per call however often the outcome is recorded, never forking the chain (both backends)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from soma.cache.memory_streams import MemoryRunStreams
from soma.core.clock import utcnow
from soma.llm.types import ToolCall as ModelToolCall
from soma.runs.commands import accept_message
from soma.runs.journal import RunJournal
from soma.runs.store import Claim
from soma.runs.tool_steps import park_for_tools, record
from soma.runs.tool_store import Loaded, Settlement
from soma.storage import DatabaseService
from soma.storage.repositories.audit import AuditEntry, AuditFilter
from soma.storage.repositories.tenants import Tenant

pytestmark = pytest.mark.integration


async def started_calls(service: DatabaseService, tenant: Tenant, names: list[str]) -> Loaded:
    """A run of a new session parked on calls of `names`, each call started."""
    async with service.database.transaction() as uow:
        agent = await uow.agents.get_by_name(tenant.id, "a")
        if agent is None:
            agent = await uow.agents.create(tenant.id, name="a", instructions="", model="x")
        session = await uow.sessions.create(tenant.id, agent_id=agent.id)
    store, tools = service.run_store, service.tool_store
    accepted = await accept_message(store, session, agent, "use your tools")
    now = utcnow()
    claim = Claim(tenant.id, accepted.run.id, "w1", now, now + timedelta(seconds=30), 3, 200)
    claimed = await store.claim(claim)
    assert claimed is not None
    journal = RunJournal(MemoryRunStreams(100, 60), accepted.run.id, claimed.run.attempt)
    asked = [ModelToolCall(f"call_{i}", name, "{}") for i, name in enumerate(names)]
    parked = await park_for_tools(tools, claimed.run, journal, "", asked, {"total_tokens": 1})
    assert parked is not None
    loaded = await tools.load(tenant.id, accepted.run.id, [e.data["id"] for e in parked.events])
    assert loaded is not None
    calls = []
    for call in loaded.calls:
        started = await tools.start(tenant.id, call.id, utcnow(), (call.status,))
        assert started is not None
        calls.append(started)
    return Loaded(loaded.run, loaded.agent, calls)


async def trail(service: DatabaseService, tenant_id: str) -> list[AuditEntry]:
    async with service.database.read() as uow:
        page = await uow.audit.list(tenant_id, 500, filters=AuditFilter())
    return [e for e in page.items if e.resource.startswith("tool_call:")]


async def test_executions_and_refusals_are_audited_once_with_their_results(
    service: DatabaseService,
) -> None:
    async with service.database.transaction() as uow:
        tenant = await uow.tenants.create("audited")
    loaded = await started_calls(service, tenant, ["files", "shell", "python"])
    ran, denied, invalid = loaded.calls
    settled = [
        Settlement(ran, "ok", "a.txt", audit="tool.execute"),
        Settlement(
            denied,
            "refused",
            "refused by policy: no shells",
            audit="policy.deny",
            reason="no shells",
        ),
        Settlement(invalid, "error", "invalid arguments"),  # nothing ran: not audited
    ]
    await record(service.tool_store, loaded.run, settled, requeue_after_s=600)
    # A redelivered request records the same outcomes again: nothing is written twice.
    await record(service.tool_store, loaded.run, settled, requeue_after_s=600)

    entries = await trail(service, tenant.id)
    agent_actor = f"agent:{loaded.run.agent_id}"
    assert [(e.action, e.resource, e.actor) for e in entries] == [
        ("tool.execute", f"tool_call:{ran.id}", agent_actor),
        ("policy.deny", f"tool_call:{denied.id}", agent_actor),
    ]
    assert entries[0].data == {
        "tool": "files", "status": "ok", "run_id": loaded.run.id, "call_id": ran.call_id,
    }  # fmt: skip
    assert entries[1].data["policy_action"] == "tool.execute"
    assert entries[1].data["reason"] == "no shells"
    async with service.database.read() as uow:
        verified = await uow.audit.verify(tenant.id)
    assert verified.ok and verified.checked == 3  # the accept's entry and these two


async def test_concurrent_records_and_accepts_keep_one_chain(service: DatabaseService) -> None:
    async with service.database.transaction() as uow:
        tenant = await uow.tenants.create("busy")
    runs = [await started_calls(service, tenant, ["files", "python"]) for _ in range(6)]
    async with service.database.transaction() as uow:
        agent = await uow.agents.get_by_name(tenant.id, "a")
        sessions = [await uow.sessions.create(tenant.id, agent_id=agent.id) for _ in range(6)]
    assert agent is not None

    async def settle(loaded: Loaded) -> None:
        settled = [Settlement(c, "ok", "done", audit="tool.execute") for c in loaded.calls]
        await record(service.tool_store, loaded.run, settled, requeue_after_s=600)

    async def send(index: int) -> None:
        await accept_message(service.run_store, sessions[index], agent, f"message {index}")

    # Records (audit head, then calls, sessions, runs) race accepts (head, then session).
    await asyncio.gather(*(settle(r) for r in runs), *(send(i) for i in range(6)))

    entries = await trail(service, tenant.id)
    assert len(entries) == 12
    assert {e.resource for e in entries} == {f"tool_call:{c.id}" for r in runs for c in r.calls}
    async with service.database.read() as uow:
        verified = await uow.audit.verify(tenant.id)
        accepts = await uow.audit.list(tenant.id, 500, filters=AuditFilter("message.accept"))
    assert len(accepts.items) == 12  # six runs parked on tools, six messages sent meanwhile
    assert verified.ok and verified.checked == 24
