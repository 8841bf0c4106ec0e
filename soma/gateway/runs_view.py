"""What the chat, runs and door routes share: their dependencies."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import Counter

from soma.gateway.directory import AgentNames, SessionDirectory
from soma.observability.metrics import Metrics
from soma.policy.port import Decision, PolicyInput
from soma.runs.port import EventStreams, Flags, RunAdmission
from soma.runs.reader import RunEventReader
from soma.runs.store import RunStore
from soma.storage.database import Database


class PolicyDecider(Protocol):
    async def decide(self, input: PolicyInput) -> Decision: ...


class ChatMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.accepted = Counter(
            "soma_messages_accepted_total",
            "Messages accepted as queued runs (202).",
            registry=metrics.registry,
        )


@dataclass
class RunsContext:
    database: Database
    store: RunStore
    sessions: SessionDirectory
    streams: EventStreams
    flags: Flags
    policy: PolicyDecider
    reader: RunEventReader
    metrics: ChatMetrics
    agents: AgentNames
    """Agents by name, for the doors that address an agent as a model."""
    admission: RunAdmission
    """Runs in flight and token budgets per tenant: a message past them gets 429."""
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the gateway drains: new messages get 503 and open streams end."""
