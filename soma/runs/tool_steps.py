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
from datetime import timedelta
from typing import Any

import orjson
from opentelemetry import propagate

from soma.bus.port import OutgoingMessage
from soma.bus.topics import TOOL_REQUESTS, TOOL_RESULTS
from soma.core.clock import utcnow
from soma.core.events import Envelope
from soma.core.ids import new_id
from soma.llm.types import ToolCall as ModelToolCall
from soma.runs.events import RunEvent
from soma.runs.journal import RunJournal
from soma.runs.tool_store import (
    MAX_CALLS_PER_STEP,
    Parked,
    Record,
    Settlement,
    Step,
    ToolStore,
)
from soma.storage.repositories.runs import Run
from soma.storage.uow import UnitOfWork

TOOL_REQUESTED = "tool.requested"
TOOL_STEP_DONE = "tool.step_done"


def parse_arguments(text: str) -> dict[str, Any] | str:
    """The model's JSON arguments as an object, or why they are not one."""
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError as exc:
        return f"the arguments are not valid JSON: {exc}"
    if not isinstance(value, dict):
        return "the arguments must be a JSON object"
    return value


def tool_request(run: Run, call_ids: Sequence[str]) -> OutgoingMessage:
    """The `tool.requests` message asking the tools service to run calls of a run."""
    return _message(run, TOOL_REQUESTS, TOOL_REQUESTED, {"calls": list(call_ids)})


def _message(run: Run, topic: str, type: str, payload: dict[str, Any]) -> OutgoingMessage:
    envelope = Envelope(
        type=type,
        tenant_id=run.tenant_id,
        session_id=run.session_id,
        run_id=run.id,
        payload=payload,
    )
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return OutgoingMessage(topic, run.session_id, envelope.to_bytes(), headers)


async def park_for_tools(
    store: ToolStore,
    run: Run,
    journal: RunJournal,
    text: str,
    calls: Sequence[ModelToolCall],
    usage: dict[str, int],
) -> Parked | None:
    """Write the step (assistant message, calls, `tool.call` events, the request) and park
    the run; None when the run was no longer running (a cancel won)."""
    ids = [new_id() for _ in calls]
    first = journal.reserve(len(calls))
    args = []
    for call in calls:
        parsed = parse_arguments(call.arguments)
        args.append(parsed if isinstance(parsed, dict) else {"_invalid": call.arguments})
    step = Step(
        run=run,
        text=text,
        calls=list(calls),
        ids=ids,
        args=args,
        event_ids=list(range(first, first + len(calls))),
        event_base=journal.reserve(3 * MAX_CALLS_PER_STEP),
        usage=usage,
        request=tool_request(run, ids),
        at=utcnow(),
    )
    return await store.park(step)


async def record(
    store: ToolStore, run: Run, settlements: Sequence[Settlement], requeue_after_s: float
) -> tuple[list[RunEvent], bool]:
    """Write outcomes and approvals of calls of `run`; resume the run when its step is done.

    Returns the events to publish (in id order) and whether the run was resumed.
    """
    now = utcnow()
    resume = _message(run, TOOL_RESULTS, TOOL_STEP_DONE, {"message_id": run.message_id})
    recorded = await store.record(
        Record(
            run=run,
            settlements=settlements,
            at=now,
            # Recovery requests it again if the resume message is lost.
            next_check_at=now + timedelta(seconds=requeue_after_s),
            resume=resume,
        )
    )
    return recorded.events, recorded.resumed


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
    await uow.audit.hold(tenant_id)  # before the approval's row: the order appends lock in
    decided = await uow.approvals.decide(
        tenant_id,
        approval_id,
        status="approved" if approve else "denied",
        decided_by=actor,
        reason=reason,
    )
    if decided is None:
        return False
    await uow.audit.append(
        tenant_id, actor=actor, action="approval.decide", resource=f"approval:{approval_id}",
        data={"decision": decided.status, "tool_call_id": decided.tool_call_id,
              "run_id": decided.run_id},
    )  # fmt: skip
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
    request = tool_request(run, [call.id])
    await uow.outbox.add(request.topic, request.key, request.value, request.headers)
    return True


def _refusal(actor: str, reason: str | None) -> str:
    why = f": {reason}" if reason else ""
    return f"refused by {actor}{why}"
