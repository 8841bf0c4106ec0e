"""Sending a message as a durable run: the one command every door calls (ARCHITECTURE §2).

The native chat route, the OpenAI doors and A2A translate their wire format into `send` (an
existing session) or `start` (a new session, optionally seeded with earlier turns); admission,
lookups, policy, the accepting transaction and its metrics live here once. Errors are the
gateway's `HTTPException`s; each door renders them in its own error shape.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException

from soma.core.errors import ConflictError, NotFoundError
from soma.gateway.auth.principal import Principal
from soma.gateway.problems import conflict, not_found, unprocessable
from soma.gateway.runs_view import RunsContext
from soma.policy.port import PolicyInput, Subject
from soma.runs.commands import Accepted, Prior, accept_message
from soma.runs.journal import publish
from soma.storage.repositories.agents import Agent
from soma.storage.repositories.messages import Message
from soma.storage.repositories.runs import Run
from soma.storage.repositories.sessions import Session, new_session

_log = logging.getLogger("soma.gateway.conversation")
RETRY_AFTER_S = "5"
WAIT_MARGIN_S = 30.0


@dataclass(frozen=True, slots=True)
class Turn:
    """What a caller says in one run."""

    content: str
    metadata: dict[str, Any] = field(default_factory=dict)
    attachments: Sequence[str] = ()
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Sent:
    accepted: Accepted
    session: Session
    agent: Agent

    @property
    def run(self) -> Run:
        return self.accepted.run

    @property
    def fresh(self) -> bool:
        """This call accepted the run (not a replay of an idempotency key)."""
        return not self.accepted.replayed


def admit(ctx: RunsContext) -> None:
    """503 while the gateway drains: no new runs."""
    if ctx.closing.is_set():
        raise HTTPException(
            503, "the platform is shutting down; retry shortly",
            headers={"Retry-After": RETRY_AFTER_S},
        )  # fmt: skip


async def send(
    ctx: RunsContext,
    principal: Principal,
    session_id: str,
    turn: Turn,
    prior: Sequence[Prior] = (),
) -> Sent:
    """Accept `turn` into an existing session of the caller's tenant, after `prior` ones."""
    admit(ctx)
    found = await ctx.sessions.get(principal.tenant_id, session_id)
    if found is None:
        raise not_found("session", session_id)
    session, agent = found
    if agent is None:
        raise conflict(f"the agent of session {session_id!r} no longer exists")
    return await _accept(ctx, principal, session, agent, turn, prior)


async def start(
    ctx: RunsContext,
    principal: Principal,
    agent: Agent,
    turn: Turn,
    prior: Sequence[Prior] = (),
    metadata: dict[str, Any] | None = None,
) -> Sent:
    """Accept `turn` into a new session of `agent`, after the `prior` messages it carries."""
    admit(ctx)
    return await _accept(ctx, principal, None, agent, turn, prior, metadata)


async def _accept(
    ctx: RunsContext,
    principal: Principal,
    session: Session | None,
    agent: Agent,
    turn: Turn,
    prior: Sequence[Prior],
    session_metadata: dict[str, Any] | None = None,
) -> Sent:
    """Check, then write: a new session, the earlier messages and the run are one
    transaction (the accepting one: nothing stays when it fails)."""
    tenant_id = principal.tenant_id
    if turn.attachments:
        async with ctx.database.read() as uow:
            missing = [a for a in turn.attachments if not await uow.uploads.get(tenant_id, a)]
        if missing:
            raise unprocessable(f"unknown upload(s): {', '.join(missing)}")
    await _authorize(ctx, principal, session, agent, turn)
    create = session is None
    if session is None:
        session = new_session(tenant_id, agent.id, metadata=session_metadata)
    metadata = (
        {**turn.metadata, "attachments": list(turn.attachments)}
        if turn.attachments
        else turn.metadata
    )
    try:
        accepted = await accept_message(
            ctx.store, session, agent, turn.content, metadata, turn.idempotency_key,
            actor=principal.actor, admission=ctx.admission, create_session=create, prior=prior,
        )  # fmt: skip
    except ConflictError as exc:
        raise conflict(str(exc)) from None
    except NotFoundError:
        ctx.sessions.forget(tenant_id, session.id)
        raise not_found("session", session.id) from None
    if not accepted.replayed:
        await publish(ctx.streams, accepted.run.id, accepted.events)
        ctx.metrics.accepted.inc()
    return Sent(accepted, session, agent)


async def _authorize(
    ctx: RunsContext, principal: Principal, session: Session | None, agent: Agent, turn: Turn
) -> None:
    decision = await ctx.policy.decide(
        PolicyInput(
            action="conversation.send",
            tenant=principal.tenant_id,
            subject=Subject(principal.key_id, tuple(sorted(principal.scopes))),
            resource={"tenant_id": principal.tenant_id,
                      "session_id": None if session is None else session.id,
                      "agent_id": agent.id, "agent": agent.name},
            context={"content_chars": len(turn.content)},
        )
    )  # fmt: skip
    if not decision.allow:
        resource = f"agent:{agent.id}" if session is None else f"session:{session.id}"
        async with ctx.database.transaction() as uow:
            await uow.audit.append(
                principal.tenant_id, actor=principal.actor, action="policy.deny",
                resource=resource,
                data={"policy_action": "conversation.send", "reason": decision.reason},
            )  # fmt: skip
        raise HTTPException(403, f"policy denied conversation.send: {decision.reason}")


async def wait_finished(ctx: RunsContext, sent: Sent) -> tuple[Run, Message | None] | None:
    """The run and its reply once terminal; None when waiting ran out or the gateway drains
    (the message is accepted either way: the caller says where to look)."""
    run_id, tenant_id = sent.run.id, sent.session.tenant_id
    timeout_s = sent.agent.settings.run_timeout_s + WAIT_MARGIN_S
    waiter = asyncio.ensure_future(ctx.reader.finished(tenant_id, run_id, fresh=sent.fresh))
    closing = asyncio.ensure_future(ctx.closing.wait())
    try:
        done, _ = await asyncio.wait(
            {waiter, closing}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (waiter, closing):
            task.cancel()
    found = (await asyncio.gather(waiter, return_exceptions=True))[0]
    if waiter not in done or isinstance(found, BaseException) or found is None:
        if isinstance(found, Exception):
            _log.warning("waiting for run %s failed: %s", run_id, found)
        return None
    return found
