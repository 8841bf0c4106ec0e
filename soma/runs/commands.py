"""State changes clients ask for: accept a message as a queued run, cancel a run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate

from soma.bus.topics import CONVERSATION_INBOUND
from soma.core.clock import utcnow
from soma.core.errors import ConflictError, NotFoundError
from soma.core.events import Envelope
from soma.core.ids import new_id
from soma.runs.events import ACTIVE, EventType, RunEvent, RunStatus, cancel_key
from soma.runs.journal import RunJournal
from soma.runs.port import EventStreams, Flags
from soma.storage.repositories.agents import Agent
from soma.storage.repositories.messages import Message
from soma.storage.repositories.runs import Run
from soma.storage.repositories.sessions import Session
from soma.storage.uow import UnitOfWork

RUN_REQUESTED = "run.requested"
CANCEL_FLAG_TTL_S = 3600.0


@dataclass(frozen=True, slots=True)
class Accepted:
    message: Message
    run: Run
    events: list[RunEvent]


def run_request(run: Run, message_id: str | None) -> tuple[bytes, dict[str, str]]:
    """The `conversation.inbound` envelope that asks a worker to execute `run`."""
    envelope = Envelope(
        type=RUN_REQUESTED,
        tenant_id=run.tenant_id,
        session_id=run.session_id,
        run_id=run.id,
        payload={"message_id": message_id},
    )
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return envelope.to_bytes(), headers


async def request_run(uow: UnitOfWork, run: Run, message_id: str | None) -> None:
    payload, headers = run_request(run, message_id)
    await uow.outbox.add(CONVERSATION_INBOUND, run.session_id, payload, headers)


async def is_next_in_session(uow: UnitOfWork, run: Run) -> bool:
    """True when no earlier run of the session is still active (runs go one at a time, in order).

    The bus keeps a session's requests in order, but requests re-sent by recovery or lost with
    an in-process bus can arrive out of order; this check makes the order hold regardless.
    """
    oldest = await uow.runs.list(run.tenant_id, 1, session_id=run.session_id, statuses=ACTIVE)
    return not oldest.items or oldest.items[0].id == run.id


async def request_next(uow: UnitOfWork, finished: Run) -> None:
    """After `finished` reached a final state, ask for the session's next queued run.

    Its own request may have arrived while `finished` was active and been set aside.
    """
    queued = await uow.runs.list(
        finished.tenant_id, 1, session_id=finished.session_id, statuses=(RunStatus.QUEUED,)
    )
    if queued.items:
        await request_run(uow, queued.items[0], queued.items[0].message_id)


async def accept_message(
    uow: UnitOfWork,
    streams: EventStreams,
    session: Session,
    agent: Agent,
    content: str,
    metadata: dict[str, Any] | None = None,
) -> Accepted:
    """Write the user message, the queued run and its request in the caller's transaction.

    ConflictError: the agent rejects concurrent runs and this session has an active one.
    """
    tenant_id = session.tenant_id
    # Appending the message locks the session's counter row first, so the active-run check
    # below is serialized with any concurrent accept on the same session.
    run_id = new_id()
    message, _ = await uow.messages.create(
        tenant_id, session.id, role="user", content=content, run_id=run_id, metadata=metadata
    )
    if agent.settings.concurrency == "reject":
        active = await uow.runs.list(tenant_id, 1, session_id=session.id, statuses=ACTIVE)
        if active.items:
            raise ConflictError(f"session {session.id} already has an active run")
    run = await uow.runs.create(
        tenant_id, session_id=session.id, agent_id=agent.id, message_id=message.id, run_id=run_id
    )
    journal = RunJournal(streams, tenant_id, run.id, attempt=0)
    queued = await journal.milestone(uow, EventType.QUEUED, {"message_id": message.id})
    await request_run(uow, run, message.id)
    return Accepted(message=message, run=run, events=[queued])


async def cancel_run(
    uow: UnitOfWork, streams: EventStreams, flags: Flags, tenant_id: str, run_id: str
) -> tuple[Run, list[RunEvent]]:
    """Cancel a queued run at once; ask the worker of a running one to stop.

    NotFoundError: no such run; ConflictError: it already finished.
    """
    run = await uow.runs.get(tenant_id, run_id)
    if run is None:
        raise NotFoundError(f"run {run_id} not found")
    if run.status == RunStatus.QUEUED:
        # Nobody executes a queued run, so the next attempt's ids are free for its last event.
        journal = RunJournal(streams, tenant_id, run_id, attempt=run.attempt + 1)
        cancelled = await finish_cancelled(uow, journal, run, (RunStatus.QUEUED,))
        if cancelled is not None:
            return cancelled
        run = await uow.runs.get(tenant_id, run_id) or run
    if run.status in (RunStatus.RUNNING, RunStatus.CANCELLING):
        updated = await uow.runs.update_status(
            tenant_id, run_id, RunStatus.CANCELLING, expected=(RunStatus.RUNNING,)
        )
        await flags.set(cancel_key(run_id), b"1", CANCEL_FLAG_TTL_S)
        return (updated or run), []
    raise ConflictError(f"run {run_id} is already {run.status}")


async def finish_cancelled(
    uow: UnitOfWork, journal: RunJournal, run: Run, expected: tuple[RunStatus, ...]
) -> tuple[Run, list[RunEvent]] | None:
    """Move a run nobody executes to `cancelled` with its terminal event; None if it moved on."""
    updated = await uow.runs.update_status(
        run.tenant_id,
        run.id,
        RunStatus.CANCELLED,
        expected=expected,
        finished_at=utcnow(),
        release_lease=True,
    )
    if updated is None:
        return None
    await request_next(uow, updated)
    event = await journal.milestone(uow, EventType.CANCELLED, {"reason": "cancelled"})
    return updated, [event]
