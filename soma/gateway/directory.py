"""Session → agent lookups for the accept path, cached in this process.

Accepting a message needs the session's agent (for policy and its concurrency rule) before
the accepting transaction. What a session contributes never changes (its tenant and agent),
and the transaction itself refuses a session deleted meanwhile, so sessions are cached for
long; agents can be edited, so an agent is reused for at most `agent_ttl_s` (a deleted agent
then fails the run when it starts). With both cached, accept is one round trip.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from soma.storage.database import Database
from soma.storage.repositories.agents import Agent
from soma.storage.repositories.sessions import Session

Found = tuple[Session, Agent | None]
SESSION_TTL_S = 300.0


class SessionLookup(Protocol):
    async def session_agent(self, tenant_id: str, session_id: str) -> Found | None: ...


class SessionDirectory:
    def __init__(
        self,
        lookup: SessionLookup,
        agent_ttl_s: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._agent_ttl_s = agent_ttl_s
        self._max = max_entries
        self._clock = clock
        self._sessions: OrderedDict[tuple[str, str], tuple[float, Session]] = OrderedDict()
        self._agents: dict[tuple[str, str], tuple[float, Agent]] = {}

    async def get(self, tenant_id: str, session_id: str) -> Found | None:
        key, now = (tenant_id, session_id), self._clock()
        cached = self._sessions.get(key)
        if cached is not None and cached[0] > now:
            known = self._agents.get((tenant_id, cached[1].agent_id))
            if known is not None and known[0] > now:
                return cached[1], known[1]
        found = await self._lookup.session_agent(tenant_id, session_id)
        if found is None:
            self.forget(tenant_id, session_id)
            return None
        if self._agent_ttl_s > 0:
            session, agent = found
            self._sessions[key] = (now + SESSION_TTL_S, session)
            self._sessions.move_to_end(key)
            if len(self._sessions) > self._max:
                self._sessions.popitem(last=False)
            if agent is not None:
                self._agents[(tenant_id, agent.id)] = (now + self._agent_ttl_s, agent)
                if len(self._agents) > self._max:
                    self._agents.clear()  # agents are few; a flood of them just refills
        return found

    def forget(self, tenant_id: str, session_id: str) -> None:
        self._sessions.pop((tenant_id, session_id), None)


class AgentLookup(Protocol):
    async def __call__(self, tenant_id: str, name: str) -> Agent | None: ...


class AgentNames:
    """Agents by name, as the standard doors address them (`model` = agent name).

    Like the agents above, an agent is reused for at most `ttl_s`: an edit shows after that,
    and a run of a deleted agent fails when it starts. Unknown names are never cached.
    """

    def __init__(
        self,
        lookup: AgentLookup,
        ttl_s: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._agents: dict[tuple[str, str], tuple[float, Agent]] = {}

    async def get(self, tenant_id: str, name: str) -> Agent | None:
        key, now = (tenant_id, name), self._clock()
        cached = self._agents.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        agent = await self._lookup(tenant_id, name)
        if agent is None:
            self._agents.pop(key, None)
        elif self._ttl_s > 0:
            if len(self._agents) >= self._max:
                self._agents.clear()  # agents are few; a flood of names just refills
            self._agents[key] = (now + self._ttl_s, agent)
        return agent


def agents_by_name(database: Database) -> AgentLookup:
    async def lookup(tenant_id: str, name: str) -> Agent | None:
        async with database.read() as uow:
            return await uow.agents.get_by_name(tenant_id, name)

    return lookup
