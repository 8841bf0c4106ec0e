"""The accept path's session → agent cache: sessions kept, agents refreshed, deletions seen."""

from __future__ import annotations

from datetime import UTC, datetime

from soma.gateway.directory import Found, SessionDirectory
from soma.storage.repositories.agents import Agent, AgentSettings
from soma.storage.repositories.sessions import Session

NOW = datetime(2026, 12, 3, tzinfo=UTC)


class Lookup:
    def __init__(self) -> None:
        self.calls = 0
        self.agent_name = "first"
        self.deleted: set[str] = set()

    async def session_agent(self, tenant_id: str, session_id: str) -> Found | None:
        self.calls += 1
        if session_id in self.deleted:
            return None
        agent = Agent(
            "a1", tenant_id, self.agent_name, "", "m", (), False, AgentSettings(), NOW, NOW
        )
        return Session(session_id, tenant_id, "a1", None, {}, NOW), agent


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_sessions_are_reused_and_agents_refreshed_after_their_ttl() -> None:
    lookup, clock = Lookup(), Clock()
    directory = SessionDirectory(lookup, agent_ttl_s=1.0, clock=clock)
    found = [await directory.get("t", f"s{i}") for i in range(3)]
    assert lookup.calls == 3 and all(f is not None for f in found)
    assert (await directory.get("t", "s0")) is not None
    assert lookup.calls == 3, "a cached session and fresh agent needed no lookup"
    lookup.agent_name = "renamed"
    clock.now += 1.5
    refreshed = await directory.get("t", "s1")
    assert refreshed is not None and refreshed[1] is not None
    assert refreshed[1].name == "renamed" and lookup.calls == 4
    # The refreshed agent serves the other sessions of that agent too.
    again = await directory.get("t", "s2")
    assert again is not None and again[1] is not None and again[1].name == "renamed"
    assert lookup.calls == 4


async def test_a_forgotten_or_deleted_session_is_looked_up_again() -> None:
    lookup = Lookup()
    directory = SessionDirectory(lookup, agent_ttl_s=60.0, clock=Clock())
    assert await directory.get("t", "gone") is not None
    lookup.deleted.add("gone")
    directory.forget("t", "gone")
    assert await directory.get("t", "gone") is None
    assert lookup.calls == 2


async def test_tenants_never_share_an_entry() -> None:
    lookup = Lookup()
    directory = SessionDirectory(lookup, agent_ttl_s=60.0, clock=Clock())
    first = await directory.get("t1", "s")
    second = await directory.get("t2", "s")
    assert first is not None and second is not None
    assert (first[0].tenant_id, second[0].tenant_id) == ("t1", "t2")
    assert lookup.calls == 2
