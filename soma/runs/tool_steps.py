"""The tool branch of a run (ARCHITECTURE §6): park for tools, record results, resume.

A model reply with tool calls parks the run (`awaiting_tools`) with one row per call and one
`tool.requests` message for the step. The tools service records each call's outcome (or the
approval it waits for); the last outcome of a step puts the run back in the queue with a
`tool.results` message, and the conversation worker resumes it with every result in context.

Event ids: the step's `tool.call` events take the attempt's next ids; then each call owns three
ranges above `event_base`: its `tool.approval_required`, its result, and a result after an
approval, so that events published in that order always carry increasing ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from opentelemetry import propagate

from soma.bus.topics import TOOL_REQUESTS, TOOL_RESULTS
from soma.core.clock import utcnow
from soma.core.events import Envelope
from soma.core.ids import new_id
from soma.llm.types import ToolCall as ModelToolCall
from soma.runs.events import EventType, RunEvent, RunStatus
from soma.runs.journal import RunJournal
from soma.storage.repositories.runs import Run
from soma.storage.repositories.tool_calls import ToolCall
from soma.storage.uow import UnitOfWork

MAX_CALLS_PER_STEP = 100
"""Also the width of each call's id range (see the module docstring)."""
TOOL_REQUESTED = "tool.requested"
TOOL_STEP_DONE = "tool.step_done"
WAITING = (RunStatus.AWAITING_TOOLS, RunStatus.AWAITING_APPROVAL)


@dataclass(frozen=True, slots=True)
class Settlement:
    """What became of one call: a result, or an approval it now waits for."""

    call: ToolCall
    status: str
    """`ok`, `error`, `refused` (the result is written) or `awaiting_approval`."""
    output: str = ""
    detail: dict[str, Any] | None = None
    after_approval: bool = False

    @property
    def waits(self) -> bool:
        return self.status == "awaiting_approval"


def approval_event_id(call: ToolCall) -> int:
    return call.event_base + call.position


def result_event_id(call: ToolCall, after_approval: bool) -> int:
    return call.event_base + MAX_CALLS_PER_STEP * (2 if after_approval else 1) + call.position


def parse_arguments(text: str) -> dict[str, Any] | str:
    """The model's JSON arguments as an object, or why they are not one."""
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError as exc:
        return f"the arguments are not valid JSON: {exc}"
    if not isinstance(value, dict):
        return "the arguments must be a JSON object"
    return value


def tool_request(run: Run, call_ids: Sequence[str]) -> tuple[bytes, dict[str, str]]:
    """The `tool.requests` message asking the tools service to run calls of a run."""
    envelope = Envelope(
        type=TOOL_REQUESTED,
        tenant_id=run.tenant_id,
        session_id=run.session_id,
        run_id=run.id,
        payload={"calls": list(call_ids)},
    )
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return envelope.to_bytes(), headers


async def park_for_tools(
    uow: UnitOfWork,
    run: Run,
    journal: RunJournal,
    text: str,
    calls: Sequence[ModelToolCall],
    usage: dict[str, int],
) -> tuple[Run, list[RunEvent]] | None:
    """Write the step (assistant message, calls, `tool.call` events, the request) and park
    the run; None when the run was no longer running (a cancel won)."""
    parked = await uow.runs.update_status(
        run.tenant_id,
        run.id,
        RunStatus.AWAITING_TOOLS,
        expected=(RunStatus.RUNNING,),
        usage=usage,
        release_lease=True,
        count_step=True,
    )
    if parked is None:
        return None
    # Models reuse call ids across steps (some always answer `call_0`): ids are made unique
    # within the run, the same in the assistant message and in each result the model reads.
    calls = [
        ModelToolCall(f"s{parked.steps}.{i}.{c.id}"[:64], c.name, c.arguments)
        for i, c in enumerate(calls)
    ]
    wire = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]
    await uow.messages.create(
        run.tenant_id,
        run.session_id,
        role="assistant",
        content=text,
        run_id=run.id,
        tool_calls=wire,
        idempotency_key=f"{run.id}:step:{parked.steps}",
    )
    events: list[RunEvent] = []
    ids: list[str] = []
    for call in calls:
        args = parse_arguments(call.arguments)
        shown = args if isinstance(args, dict) else {"_invalid": call.arguments}
        tool_call_id = new_id()
        ids.append(tool_call_id)
        events.append(
            journal.event(
                EventType.TOOL_CALL,
                {"id": tool_call_id, "call_id": call.id, "name": call.name, "args": shown},
            )
        )
    base = journal.reserve(3 * MAX_CALLS_PER_STEP)
    for position, (call, tool_call_id) in enumerate(zip(calls, ids, strict=True)):
        args = parse_arguments(call.arguments)
        await uow.tool_calls.create(
            run.tenant_id,
            run_id=run.id,
            session_id=run.session_id,
            call_id=call.id,
            name=call.name,
            args=args if isinstance(args, dict) else {"_invalid": call.arguments},
            tool_call_id=tool_call_id,
            position=position,
            event_base=base,
        )
    for event in events:
        await uow.run_events.append(run.tenant_id, run.id, event.type, event.data, seq=event.id)
    payload, headers = tool_request(parked, ids)
    await uow.outbox.add(TOOL_REQUESTS, run.session_id, payload, headers)
    return parked, events


async def record(
    uow: UnitOfWork, run: Run, settlements: Sequence[Settlement], requeue_after_s: float
) -> tuple[list[RunEvent], bool]:
    """Write outcomes and approvals of calls of `run`; resume the run when its step is done.

    Returns the events to publish (in id order) and whether the run was resumed.
    """
    events: list[RunEvent] = []
    now = utcnow()
    for settled in settlements:
        call = settled.call
        if settled.waits:
            approval, _ = await uow.approvals.create(
                run.tenant_id, run_id=run.id, tool_call_id=call.id
            )
            await uow.tool_calls.update_status(
                run.tenant_id, call.id, "awaiting_approval", approval_id=approval.id
            )
            data = {"approval_id": approval.id, "id": call.id, "name": call.name}
            event = RunEvent(approval_event_id(call), EventType.APPROVAL_REQUIRED, data)
        else:
            written = await uow.tool_calls.update_status(
                run.tenant_id,
                call.id,
                settled.status,
                expected=("running", "denied", "approved", "pending"),
                result={"output": settled.output, **(settled.detail or {})},
                error=settled.output if settled.status != "ok" else None,
                finished_at=now,
            )
            if written is None:
                continue  # recorded already (a redelivery raced this one)
            await uow.messages.create(
                run.tenant_id,
                run.session_id,
                role="tool",
                content=settled.output,
                run_id=run.id,
                tool_call_id=call.call_id,
                idempotency_key=f"{call.id}:result",
            )
            data = {"id": call.id, "status": settled.status, "output": settled.output}
            event = RunEvent(
                result_event_id(call, settled.after_approval), EventType.TOOL_RESULT, data
            )
        await uow.run_events.append(run.tenant_id, run.id, event.type, event.data, seq=event.id)
        events.append(event)
    events.sort(key=lambda e: e.id)
    return events, await _settle_run(uow, run, now, requeue_after_s)


async def _settle_run(uow: UnitOfWork, run: Run, now: datetime, requeue_after_s: float) -> bool:
    """Resume the run when no call of its step is left without a result; say what it waits
    for otherwise."""
    left = await uow.tool_calls.count_unfinished(run.tenant_id, run.id)
    if left:
        approving = bool(left.get("awaiting_approval"))
        waiting = RunStatus.AWAITING_APPROVAL if approving else RunStatus.AWAITING_TOOLS
        await uow.runs.update_status(run.tenant_id, run.id, waiting, expected=WAITING)
        return False
    resumed = await uow.runs.update_status(
        run.tenant_id,
        run.id,
        RunStatus.QUEUED,
        expected=WAITING,
        # Recovery requests it again if the resume message is lost.
        next_check_at=now + timedelta(seconds=requeue_after_s),
    )
    if resumed is None:
        return False
    envelope = Envelope(
        type=TOOL_STEP_DONE,
        tenant_id=run.tenant_id,
        session_id=run.session_id,
        run_id=run.id,
        payload={"message_id": run.message_id},
    )
    headers: dict[str, str] = {}
    propagate.inject(headers)
    await uow.outbox.add(TOOL_RESULTS, run.session_id, envelope.to_bytes(), headers)
    return True


async def decide(
    uow: UnitOfWork,
    tenant_id: str,
    approval_id: str,
    *,
    approve: bool,
    actor: str,
    reason: str | None,
) -> bool:
    """Record a person's (or the expiry's) decision and ask the tools service to act on it;
    False when the approval is not pending (decided already, or not this tenant's)."""
    decided = await uow.approvals.decide(
        tenant_id,
        approval_id,
        status="approved" if approve else "denied",
        decided_by=actor,
        reason=reason,
    )
    if decided is None:
        return False
    call = await uow.tool_calls.update_status(
        tenant_id,
        decided.tool_call_id,
        "approved" if approve else "denied",
        expected=("awaiting_approval",),
        error=None if approve else _refusal(actor, reason),
    )
    run = await uow.runs.get(tenant_id, decided.run_id)
    if call is None or run is None:
        return True
    payload, headers = tool_request(run, [call.id])
    await uow.outbox.add(TOOL_REQUESTS, run.session_id, payload, headers)
    return True


def _refusal(actor: str, reason: str | None) -> str:
    why = f": {reason}" if reason else ""
    return f"refused by {actor}{why}"
