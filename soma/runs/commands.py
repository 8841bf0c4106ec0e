"""State changes clients ask for: accept a message as a queued run, cancel a run."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from opentelemetry import propagate

from soma.bus.port import OutgoingMessage
from soma.bus.topics import CONVERSATION_INBOUND
from soma.core.clock import utcnow
from soma.core.errors import ConflictError, NotFoundError
from soma.core.events import Envelope
from soma.core.ids import new_id
from soma.runs.events import EventType, RunEvent, RunStatus, cancel_key, first_id
from soma.runs.journal import RunJournal
from soma.runs.port import EventStreams, Flags
from soma.runs.store import Acceptance, Finish, RunStore
from soma.storage.database import Database
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
    replayed: bool = False
    """The message's idempotency key was used before: this is that earlier acceptance."""


def run_request(run: Run) -> OutgoingMessage:
    """The `conversation.inbound` message that asks a worker to execute `run`."""
    envelope = Envelope(
        type=RUN_REQUESTED,
        tenant_id=run.tenant_id,
        session_id=run.session_id,
        run_id=run.id,
        payload={"message_id": run.message_id},
    )
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return OutgoingMessage(CONVERSATION_INBOUND, run.session_id, envelope.to_bytes(), headers)


async def request_run(uow: UnitOfWork, run: Run) -> None:
    """Ask again for a run (recovery), in the caller's transaction."""
    request = run_request(run)
    await uow.outbox.add(request.topic, request.key, request.value, dict(request.headers))


async def accept_message(
    store: RunStore,
    session: Session,
    agent: Agent,
    content: str,
    metadata: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Accepted:
    """Write the user message, the queued run, `run.queued` and its request: one transaction.

    A client's `idempotency_key` (per session) makes a retry return the first acceptance.
    NotFoundError: the session is gone. ConflictError: the agent rejects concurrent runs and
    this session has an active one, or the key was used for a different message.
    """
    written = acceptance(session, agent, content, metadata, idempotency_key)
    return await accept(store, written)


async def accept(store: RunStore, acceptance: Acceptance) -> Accepted:
    """ConflictError also when an idempotency key comes back with a different message."""
    stored = await store.accept(acceptance)
    if stored.id == acceptance.message.id:
        return Accepted(message=stored, run=acceptance.run, events=[acceptance.queued])
    if stored.content != acceptance.message.content or stored.run_id is None:
        raise ConflictError("this Idempotency-Key was already used for a different message")
    run = replace(acceptance.run, id=stored.run_id, message_id=stored.id)
    return Accepted(message=stored, run=run, events=[], replayed=True)


def acceptance(
    session: Session,
    agent: Agent,
    content: str,
    metadata: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Acceptance:
    """What accepting `content` into `session` writes."""
    now = utcnow()
    # A client's key is scoped to the session (ids are global, so to its tenant too), and
    # kept apart from the `<run>:assistant` keys of replies.
    key = None if idempotency_key is None else f"client:{session.id}:{idempotency_key}"
    message_id, run_id = new_id(), new_id()
    message = Message(
        id=message_id,
        tenant_id=session.tenant_id,
        session_id=session.id,
        run_id=run_id,
        role="user",
        content=content,
        tool_calls=None,
        tool_call_id=None,
        metadata=dict(metadata or {}),
        seq=0,
        idempotency_key=key,
        created_at=now,
    )
    run = Run(
        id=run_id,
        tenant_id=session.tenant_id,
        session_id=session.id,
        agent_id=agent.id,
        message_id=message_id,
        status=RunStatus.QUEUED,
        attempt=0,
        lease_owner=None,
        lease_expires_at=None,
        usage=None,
        error=None,
        created_at=now,
        started_at=None,
        finished_at=None,
    )
    return Acceptance(
        message=message,
        run=run,
        queued=RunEvent(first_id(0), EventType.QUEUED, {"message_id": message_id}),
        request=run_request(run),
        reject_if_active=agent.settings.concurrency == "reject",
    )


async def finish_run(
    store: RunStore,
    journal: RunJournal,
    run: Run,
    status: RunStatus,
    expected: tuple[RunStatus, ...],
    event: RunEvent,
    error: str | None = None,
) -> Run | None:
    """End a run without a reply and publish its terminal event; None if it had moved on.

    The session's next queued run is requested in the same transaction: its own request
    may have been set aside while this one was active.
    """
    finished = await store.finish(
        Finish(
            tenant_id=run.tenant_id,
            run_id=run.id,
            status=status,
            expected=expected,
            error=error,
            finished_at=utcnow(),
            event=event,
            next_request=run_request,
        )
    )
    if finished is not None:
        await journal.publish([event])
    return finished


async def cancel_run(
    database: Database,
    store: RunStore,
    streams: EventStreams,
    flags: Flags,
    tenant_id: str,
    run_id: str,
) -> Run:
    """Cancel a queued run at once; ask the worker of a running one to stop.

    NotFoundError: no such run; ConflictError: it already finished.
    """
    async with database.read() as uow:
        run = await uow.runs.get(tenant_id, run_id)
    if run is None:
        raise NotFoundError(f"run {run_id} not found")
    if run.status == RunStatus.QUEUED:
        # Nobody executes a queued run, so the next attempt's ids are free for its last event.
        journal = RunJournal(streams, run_id, attempt=run.attempt + 1)
        event = journal.event(EventType.CANCELLED, {"reason": "cancelled"})
        queued = (RunStatus.QUEUED,)
        cancelled = await finish_run(store, journal, run, RunStatus.CANCELLED, queued, event)
        if cancelled is not None:
            return cancelled
        async with database.read() as uow:
            run = await uow.runs.get(tenant_id, run_id) or run
    if run.status in (RunStatus.AWAITING_TOOLS, RunStatus.AWAITING_APPROVAL):
        # No worker holds it: end it now (results still arriving find it finished).
        journal = RunJournal(streams, run_id, attempt=run.attempt + 1)
        event = journal.event(EventType.CANCELLED, {"reason": "cancelled"})
        waiting = (RunStatus.AWAITING_TOOLS, RunStatus.AWAITING_APPROVAL)
        cancelled = await finish_run(store, journal, run, RunStatus.CANCELLED, waiting, event)
        if cancelled is not None:
            return cancelled
        async with database.read() as uow:
            run = await uow.runs.get(tenant_id, run_id) or run
    if run.status in (RunStatus.RUNNING, RunStatus.CANCELLING):
        async with database.transaction() as uow:
            updated = await uow.runs.update_status(
                tenant_id, run_id, RunStatus.CANCELLING, expected=(RunStatus.RUNNING,)
            )
        await flags.set(cancel_key(run_id), b"1", CANCEL_FLAG_TTL_S)
        return updated or run
    raise ConflictError(f"run {run_id} is already {run.status}")
