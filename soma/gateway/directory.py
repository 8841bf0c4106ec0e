"""Session → agent lookups for the accept path, cached briefly in this process.

Accepting a message needs the session's agent (for policy and its concurrency rule) before
the accepting transaction. Caching the pair for `ttl_s` makes accept one round trip; the
transaction itself refuses a session deleted meanwhile, so the cache can only be stale about
agent settings, and for at most `ttl_s` (a deleted agent fails the run when it starts).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from soma.storage.repositories.agents import Agent
from soma.storage.repositories.sessions import Session

Found = tuple[Session, Agent | None]


class SessionLookup(Protocol):
    async def session_agent(self, tenant_id: str, session_id: str) -> Found | None: ...


class SessionDirectory:
    def __init__(
        self,
        lookup: SessionLookup,
        ttl_s: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, Found]] = OrderedDict()

    async def get(self, tenant_id: str, session_id: str) -> Found | None:
        key = (tenant_id, session_id)
        entry = self._entries.get(key)
        now = self._clock()
        if entry is not None and entry[0] > now:
            return entry[1]
        found = await self._lookup.session_agent(tenant_id, session_id)
        if found is None:
            self._entries.pop(key, None)
            return None
        if self._ttl_s > 0:
            self._entries[key] = (now + self._ttl_s, found)
            self._entries.move_to_end(key)
            if len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return found

    def forget(self, tenant_id: str, session_id: str) -> None:
        self._entries.pop((tenant_id, session_id), None)
