"""The tool store: the tool branch's hot path as a few coarse transactions (ARCHITECTURE §6).

Parking a run writes its step in one transaction; the tools service reads a request's run,
agent and calls in one read, starts each call with one conditional update, and writes the
outcomes and settles the run in one transaction. Adapters: `soma.storage.toolstore_sqlite`
and `soma.storage.toolstore_postgres`, on the run store's connections.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from soma.bus.port import OutgoingMessage
from soma.llm.types import ToolCall as ModelToolCall
from soma.runs.events import EventType, RunEvent

if TYPE_CHECKING:  # the storage package imports this port's adapters: no import cycle
    from soma.storage.repositories.agents import Agent
    from soma.storage.repositories.runs import Run
    from soma.storage.repositories.tool_calls import ToolCall

MAX_CALLS_PER_STEP = 100
"""Also the width of each call's id range (see `soma.runs.tool_steps`)."""
CALL_ID_LENGTH = 64
RESULT_FROM = ("running", "denied", "approved", "pending")
"""The statuses a call's result is written from: once written, it is never written again."""
AuditEntryParts = tuple[str, str, str, dict[str, Any]]


def call_id(steps: int, position: int, model_id: str) -> str:
    """A model's call id made unique within the run (models reuse ids across steps; some
    always answer `call_0`), the same in the assistant message and in each result."""
    return f"s{steps}.{position}.{model_id}"[:CALL_ID_LENGTH]


@dataclass(frozen=True, slots=True)
class Step:
    """A model reply that asks for tools, as the parked run's next step holds it."""

    run: Run
    """As claimed; the store moves it on only while it is still running."""
    text: str
    calls: Sequence[ModelToolCall]
    """As the model named them (`named` gives the ids the run keeps)."""
    ids: Sequence[str]
    """The `tool_calls` rows' ids, one per call."""
    args: Sequence[dict[str, Any]]
    """Each call's arguments as stored: the parsed object, or `{"_invalid": text}`."""
    event_ids: Sequence[int]
    """The `tool.call` events' ids, one per call."""
    event_base: int
    """The first of the ids reserved for the calls' later events."""
    usage: dict[str, int]
    request: OutgoingMessage
    """The `tool.requests` message for the step."""
    at: datetime

    def named(self, steps: int) -> list[ModelToolCall]:
        """The calls under their ids within the run, once the step's number is known."""
        return [
            ModelToolCall(call_id(steps, i, c.id), c.name, c.arguments)
            for i, c in enumerate(self.calls)
        ]

    def key(self, steps: int) -> str:
        """The idempotency key of the step's assistant message."""
        return f"{self.run.id}:step:{steps}"

    def events(self, steps: int) -> list[RunEvent]:
        """The step's `tool.call` events."""
        rows = zip(self.event_ids, self.ids, self.named(steps), self.args, strict=True)
        return [
            RunEvent(n, EventType.TOOL_CALL, {"id": i, "call_id": c.id, "name": c.name, "args": a})
            for n, i, c, a in rows
        ]


@dataclass(frozen=True, slots=True)
class Parked:
    run: Run
    events: list[RunEvent]
    """The step's `tool.call` events, written; to publish."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """What settling a tool request needs: its run, the run's agent, the calls asked for."""

    run: Run
    agent: Agent | None
    calls: list[ToolCall]


@dataclass(frozen=True, slots=True)
class Settlement:
    """What became of one call: a result, or an approval it now waits for."""

    call: ToolCall
    status: str
    """`ok`, `error`, `refused` (the result is written) or `awaiting_approval`."""
    output: str = ""
    detail: dict[str, Any] | None = None
    after_approval: bool = False
    audit: str | None = None
    """The audit action chained with the result: `tool.execute` (it ran), `policy.deny` or
    `tool.refused` (the agent may not use it); None when nothing ran and nothing was refused."""
    reason: str | None = None
    """Why it was refused, for the audit entry."""

    @property
    def waits(self) -> bool:
        return self.status == "awaiting_approval"

    @property
    def result(self) -> dict[str, Any]:
        return {"output": self.output, **(self.detail or {})}

    @property
    def error(self) -> str | None:
        return self.output if self.status != "ok" else None

    @property
    def event_id(self) -> int:
        """Each call owns three ids: its approval, its result, its result after an approval."""
        call = self.call
        if self.waits:
            return call.event_base + call.position
        span = MAX_CALLS_PER_STEP * (2 if self.after_approval else 1)
        return call.event_base + span + call.position

    def approval_event(self, approval_id: str) -> RunEvent:
        data = {"approval_id": approval_id, "id": self.call.id, "name": self.call.name}
        return RunEvent(self.event_id, EventType.APPROVAL_REQUIRED, data)

    def result_event(self) -> RunEvent:
        data = {"id": self.call.id, "status": self.status, "output": self.output}
        return RunEvent(self.event_id, EventType.TOOL_RESULT, data)

    def audit_entry(self, run: Run) -> AuditEntryParts | None:
        """Actor, action, resource and data of the audit entry written with this result."""
        if self.audit is None:
            return None
        call = self.call
        data: dict[str, Any] = {"tool": call.name, "status": self.status, "run_id": run.id,
                                "call_id": call.call_id}  # fmt: skip
        if self.audit == "policy.deny":
            data["policy_action"] = "tool.execute"
        if self.reason is not None:
            data["reason"] = self.reason
        # The call acts for the run's agent (as the policy's subject does).
        return f"agent:{run.agent_id}", self.audit, f"tool_call:{call.id}", data


@dataclass(frozen=True, slots=True)
class Record:
    """Outcomes of calls of one run, written together; the run moves on with them."""

    run: Run
    settlements: Sequence[Settlement]
    at: datetime
    next_check_at: datetime
    """When recovery asks again for a resumed run whose resume message was lost."""
    resume: OutgoingMessage
    """The `tool.results` message, written when the step is complete."""


@dataclass(frozen=True, slots=True)
class Recorded:
    events: list[RunEvent]
    """Written, in id order; to publish."""
    resumed: bool
    """The step was complete and the run is queued again."""


class ToolStore(Protocol):
    async def park(self, step: Step) -> Parked | None:
        """Write the step (assistant message, calls, `tool.call` events, the request) and
        move the run to `awaiting_tools`; None when it was no longer running (a cancel won).

        NotFoundError: the run's session is gone (nothing written).
        """
        ...

    async def load(self, tenant_id: str, run_id: str, call_ids: Sequence[str]) -> Loaded | None:
        """The run, its agent and those of `call_ids` that exist, in that order; None
        without such a run."""
        ...

    async def start(
        self, tenant_id: str, call_id: str, now: datetime, from_statuses: Collection[str]
    ) -> ToolCall | None:
        """Mark a call running (at most once from each of `from_statuses`); None if it was
        not in one of them: another delivery started it, or it has a result."""
        ...

    async def restart(
        self, tenant_id: str, call_id: str, now: datetime, started_before: datetime
    ) -> ToolCall | None:
        """Run an interrupted call again: it must still be running since before
        `started_before`; None when another sweep or delivery took it."""
        ...

    async def record(self, record: Record) -> Recorded:
        """Write the results (call, `tool` message, `tool.result` event) and approvals (row,
        call, `tool.approval_required` event); a result written before is skipped. Then the
        run is queued again with the resume message when no call of it is left without a
        result, or says what it waits for (`awaiting_tools`, `awaiting_approval`).

        NotFoundError: a result is due and the run's session is gone (nothing written).
        """
        ...
