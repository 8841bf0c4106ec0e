"""Recall in the turn: the memories of the session's scope most relevant to the question."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from soma.config.memory import MemorySettings
from soma.memory.model import Recalled, Scope
from soma.policy.port import PolicyEngine, PolicyInput, Subject
from soma.runtime.context import estimate_tokens
from soma.storage.repositories.agents import Agent

HEADER = "What you remember about this user and conversation (most relevant first):"


class MemoryRecall(Protocol):
    async def recall(self, scope: Scope, query: str, k: int) -> list[Recalled]: ...


class RecallDenied(Exception):
    """The policy refused `memory.read` for this turn."""


@dataclass(frozen=True)
class Recaller:
    memory: MemoryRecall
    policy: PolicyEngine
    settings: MemorySettings

    async def memories(
        self, tenant_id: str, agent: Agent, user: str | None, question: str
    ) -> list[str]:
        """Contents of the top-k memories that fit the agent's recall budget, best first."""
        scope = Scope(tenant_id, agent.id, user)
        decision = await self.policy.decide(
            PolicyInput(
                action="memory.read",
                tenant=tenant_id,
                # The run was accepted from a chat key; the turn reads memory on its behalf.
                subject=Subject(f"agent:{agent.id}", ("chat",)),
                resource={"tenant_id": tenant_id, "agent_id": agent.id, "user": user},
                context={"purpose": "recall"},
            )
        )
        if not decision.allow:
            raise RecallDenied(decision.reason)
        k = agent.settings.recall_k or self.settings.recall_k
        found = await self.memory.recall(scope, question, k)
        budget = agent.settings.recall_budget_tokens or self.settings.recall_budget_tokens
        return within_budget([r.memory.content for r in found], budget)


def within_budget(contents: Sequence[str], budget_tokens: int) -> list[str]:
    """The leading contents whose estimated tokens fit in `budget_tokens`."""
    kept: list[str] = []
    for content in contents:
        cost = estimate_tokens(content)
        if cost > budget_tokens:
            break
        kept.append(content)
        budget_tokens -= cost
    return kept


def memory_prompt(memories: Sequence[str]) -> str:
    return HEADER + "".join(f"\n- {' '.join(m.split())}" for m in memories)
