"""State changes clients ask for: accept a message as a queued run, cancel a run."""

from __future__ import annotations

from collections.abc import Sequence
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
from soma.runs.port import EventStreams, Flags, RunAdmission
from soma.runs.store import Acceptance, Finish, RunStore
from soma.storage.audit_chain import SYSTEM_ACTOR, AuditRecord
from soma.storage.database import Database
from soma.storage.repositories.agents import Agent
from soma.storage.repositories.messages import Message
from soma.storage.repositories.runs import Run
from soma.storage.repositories.sessions import Session
from soma.storage.uow import UnitOfWork

RUN_REQUESTED = "run.requested"

CANCEL_FLAG_TTL_S = 3600.0


@dataclass(frozen=True, slots=True)
class Prior:
    """An earlier message a stateless caller carries in its request (role system/user/assistant)."""

    role: str
    content: str


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
    actor: str = SYSTEM_ACTOR,
    admission: RunAdmission | None = None,
    *,
    create_session: bool = False,
    prior: Sequence[Prior] = (),
) -> Accepted:
    """Write the user message, the queued run, `run.queued`, its request and the audit entry:
    one transaction; with `create_session` the session's row and with `prior` the earlier
    messages too, in the same one.

    A client's `idempotency_key` (per session) makes a retry return the first acceptance.
    NotFoundError: the session is gone. ConflictError: the agent rejects concurrent runs and
    this session has an active one, or the key was used for a different message.
    `admission` counts the run in flight first (and raises its own refusal: nothing written).
    """
    written = acceptance(
        session, agent, content, metadata, idempotency_key, actor,
        create_session=create_session, prior=prior,
    )  # fmt: skip
    if admission is None:
        return await accept(store, written)
    tenant_id, run_id = session.tenant_id, written.run.id
    await admission.admit(tenant_id, run_id)
    try:
        accepted = await accept(store, written)
    except BaseException:
        await admission.release(tenant_id, run_id)
        raise
    if accepted.replayed:
        await admission.release(tenant_id, run_id)
    return accepted


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
    actor: str = SYSTEM_ACTOR,
    *,
    create_session: bool = False,
    prior: Sequence[Prior] = (),
) -> Acceptance:
    """What accepting `content` into `session` (after `prior`) writes."""
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
        audit=AuditRecord(
            session.tenant_id,
            actor,
            "message.accept",
            f"message:{message_id}",
            {"run_id": run_id, "session_id": session.id},
            now,
        ),
        new_session=session if create_session else None,
        prior=[replace(message, id=new_id(), run_id=None, role=p.role, content=p.content,
                       metadata={}, idempotency_key=None) for p in prior],
    )  # fmt: skip


async def finish_run(
    store: RunStore,
    journal: RunJournal,
    run: Run,
    status: RunStatus,
    expected: tuple[RunStatus, ...],
    event: RunEvent,
    error: str | None = None,
    audit: AuditRecord | None = None,
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
            audit=audit,
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
    actor: str = SYSTEM_ACTOR,
) -> Run:
    """Cancel a queued run at once; ask the worker of a running one to stop (audited).

    NotFoundError: no such run; ConflictError: it already finished.
    """
    async with database.read() as uow:
        run = await uow.runs.get(tenant_id, run_id)
    if run is None:
        raise NotFoundError(f"run {run_id} not found")
    audit = AuditRecord(tenant_id, actor, "run.cancel", f"run:{run_id}", {})
    # Queued, or waiting for tools: no worker holds the run, so end it now (results still
    # arriving find it finished); the next attempt's ids are free for its last event. A run
    # that moved on meanwhile is read again and goes to the next step.
    for idle in (
        (RunStatus.QUEUED,),
        (RunStatus.AWAITING_TOOLS, RunStatus.AWAITING_APPROVAL),
    ):
        if run.status not in idle:
            continue
        journal = RunJournal(streams, run_id, attempt=run.attempt + 1)
        event = journal.event(EventType.CANCELLED, {"reason": "cancelled"})
        cancelled = await finish_run(
            store, journal, run, RunStatus.CANCELLED, idle, event, audit=audit
        )
        if cancelled is not None:
            return cancelled
        async with database.read() as uow:
            run = await uow.runs.get(tenant_id, run_id) or run
    if run.status in (RunStatus.RUNNING, RunStatus.CANCELLING):
        async with database.transaction() as uow:
            updated = await uow.runs.update_status(
                tenant_id, run_id, RunStatus.CANCELLING, expected=(RunStatus.RUNNING,)
            )
            if updated is not None:
                await uow.audit.record(audit)
        await flags.set(cancel_key(run_id), b"1", CANCEL_FLAG_TTL_S)
        return updated or run
    raise ConflictError(f"run {run_id} is already {run.status}")
