"""One attempt at one run: claim it, call the model, stream deltas, persist the outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from soma.bus.topics import CONVERSATION_OUTBOUND
from soma.config.settings import LLMSettings, RuntimeSettings
from soma.core.clock import utcnow
from soma.core.events import Envelope
from soma.llm.types import ChatChunk, ChatRequest, Usage
from soma.runs.commands import finish_cancelled, is_next_in_session, request_next
from soma.runs.events import EventType, RunEvent, RunStatus, cancel_key
from soma.runs.journal import RunJournal
from soma.runs.port import EventStreams, Flags
from soma.runs.views import message_json
from soma.runtime.context import build_context, turns_before
from soma.storage.database import Database
from soma.storage.repositories.messages import Message
from soma.storage.repositories.runs import Run

_log = logging.getLogger("soma.runtime")
HISTORY_LIMIT = 200
REPLY_RESERVE_TOKENS = 512
CANCEL_POLL_S = 0.2


class ChatModels(Protocol):
    """The model router as the runtime sees it."""

    def stream(self, model: str, request: ChatRequest) -> AsyncIterator[ChatChunk]: ...


class _CancelRequested(Exception):
    pass


class _Deferred(Exception):
    pass


@dataclass(frozen=True)
class TurnDeps:
    database: Database
    streams: EventStreams
    flags: Flags
    models: ChatModels
    runtime: RuntimeSettings
    llm: LLMSettings
    owner: str


@dataclass
class _Reply:
    text: str = ""
    usage: Usage | None = None
    model: str | None = None


class Turn:
    """Executes one delivery of a run request; safe to run again for the same run."""

    def __init__(self, deps: TurnDeps, tenant_id: str, run_id: str) -> None:
        self.deps = deps
        self.tenant_id = tenant_id
        self.run_id = run_id
        self.outcome = "skipped"
        self._abandoned = False

    async def execute(self) -> None:
        run, journal = await self._claim()
        if run is None or journal is None:
            return
        work = asyncio.create_task(self._run_claimed(run, journal), name=f"turn:{self.run_id}")
        renewer = asyncio.create_task(self._renew_lease(work), name=f"lease:{self.run_id}")
        try:
            await work
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._abandoned and current is not None and not current.cancelling():
                self.outcome = "abandoned"
                return
            work.cancel()
            await asyncio.shield(self._hand_back())
            raise
        finally:
            renewer.cancel()
            with suppress(asyncio.CancelledError):
                await renewer

    async def _claim(self) -> tuple[Run | None, RunJournal | None]:
        try:
            return await self._try_claim()
        except _Deferred:
            self.outcome = "deferred"
            return None, None

    async def _try_claim(self) -> tuple[Run | None, RunJournal | None]:
        deps = self.deps
        lease_until = utcnow() + timedelta(seconds=deps.runtime.lease_s)
        async with deps.database.transaction() as uow:
            run = await uow.runs.claim(
                self.tenant_id,
                self.run_id,
                owner=deps.owner,
                lease_until=lease_until,
                from_statuses=(RunStatus.QUEUED, RunStatus.RUNNING),
            )
            if run is None:
                return None, None
            if not await is_next_in_session(uow, run):
                # An earlier run of this session is still active; when it finishes it requests
                # this one again. Rolling back undoes the claim.
                raise _Deferred
            journal = RunJournal(deps.streams, self.tenant_id, self.run_id, run.attempt)
            if run.attempt > deps.runtime.max_attempts:
                error = f"gave up after {run.attempt - 1} attempts"
                failed = await self._fail_in(uow, journal, error)
                events = [failed] if failed else []
            else:
                started = await journal.milestone(uow, EventType.STARTED, {"attempt": run.attempt})
                events = [started]
        await journal.publish(events)
        if run.attempt > deps.runtime.max_attempts:
            self.outcome = "failed"
            return None, None
        return run, journal

    async def _run_claimed(self, run: Run, journal: RunJournal) -> None:
        deps = self.deps
        async with deps.database.read() as uow:
            agent = await uow.agents.get(self.tenant_id, run.agent_id)
            user_message = (
                await uow.messages.get(self.tenant_id, run.message_id) if run.message_id else None
            )
            history: list[Message] = []
            if user_message is not None:
                recent = await uow.messages.history(
                    self.tenant_id, run.session_id, limit=HISTORY_LIMIT
                )
                history = turns_before(recent, self.run_id, user_message.seq)
        if agent is None:
            await self._finish_failed(journal, "the run's agent no longer exists")
            return
        if agent.model not in deps.llm.models:
            await self._finish_failed(journal, f"agent model {agent.model!r} is not configured")
            return
        budget = deps.llm.models[agent.model].context_tokens - REPLY_RESERVE_TOKENS
        request = ChatRequest(messages=build_context(agent.instructions, history, budget))
        timeout_s = agent.settings.run_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                reply = await self._generate(agent.model, request, journal)
        except TimeoutError:
            await self._finish_failed(journal, f"run timed out after {timeout_s:g}s")
            return
        except _CancelRequested:
            await self._finish_cancelled(journal)
            return
        except Exception as exc:
            _log.warning("run %s failed: %s", self.run_id, exc)
            await self._finish_failed(journal, _one_line(exc))
            return
        await self._finish_completed(run, journal, reply)

    async def _generate(self, model: str, request: ChatRequest, journal: RunJournal) -> _Reply:
        """Stream the reply, publishing deltas; one model call (agents have no tools yet)."""
        reply = _Reply()
        watcher = asyncio.create_task(self._watch_cancel(asyncio.current_task()))
        try:
            async for chunk in self.deps.models.stream(model, request):
                if chunk.model:
                    reply.model = chunk.model
                if chunk.usage is not None:
                    reply.usage = chunk.usage
                if chunk.text:
                    reply.text += chunk.text
                    await journal.delta(chunk.text)
        except asyncio.CancelledError:
            if watcher.done() and not watcher.cancelled() and watcher.result():
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                raise _CancelRequested from None
            raise
        finally:
            watcher.cancel()
        return reply

    async def _watch_cancel(self, target: asyncio.Task[Any] | None) -> bool:
        """Poll the run's cancel flag; cancel `target` (the generation) when it is set."""
        key = cancel_key(self.run_id)
        while True:
            await asyncio.sleep(CANCEL_POLL_S)
            if await self.deps.flags.get(key) is not None:
                if target is not None:
                    target.cancel()
                return True

    async def _renew_lease(self, work: asyncio.Task[None]) -> None:
        """Keep the lease while `work` runs; if it is lost, stop `work` without a trace."""
        deps = self.deps
        interval = deps.runtime.lease_s / 3
        while True:
            await asyncio.sleep(interval)
            lease_until = utcnow() + timedelta(seconds=deps.runtime.lease_s)
            async with deps.database.transaction() as uow:
                ours = await uow.runs.renew_lease(
                    self.tenant_id, self.run_id, owner=deps.owner, lease_until=lease_until
                )
            if not ours:
                _log.warning("lost the lease of run %s: abandoning this attempt", self.run_id)
                self._abandoned = True
                work.cancel()
                return

    async def _finish_completed(self, run: Run, journal: RunJournal, reply: _Reply) -> None:
        deps = self.deps
        usage = _usage_json(reply.usage)
        async with deps.database.transaction() as uow:
            updated = await uow.runs.update_status(
                self.tenant_id,
                self.run_id,
                RunStatus.COMPLETED,
                expected=(RunStatus.RUNNING,),
                usage=usage,
                finished_at=utcnow(),
                release_lease=True,
            )
            if updated is not None:
                await request_next(uow, updated)
                message, _ = await uow.messages.create(
                    self.tenant_id,
                    run.session_id,
                    role="assistant",
                    content=reply.text,
                    run_id=self.run_id,
                    metadata={"model": reply.model} if reply.model else {},
                    idempotency_key=f"{self.run_id}:assistant",
                )
                body = message_json(message)
                events = [
                    await journal.milestone(uow, EventType.MESSAGE_COMPLETED, {"message": body}),
                    await journal.milestone(uow, EventType.COMPLETED, {"usage": usage}),
                ]
                outbound = Envelope(
                    type="message.completed",
                    tenant_id=self.tenant_id,
                    session_id=run.session_id,
                    run_id=self.run_id,
                    payload={"message": body, "agent_id": run.agent_id},
                )
                await uow.outbox.add(CONVERSATION_OUTBOUND, run.session_id, outbound.to_bytes(), {})
        if updated is None:
            # A cancel landed while the reply was being written: it wins.
            await self._finish_cancelled(journal)
            return
        await journal.publish(events)
        self.outcome = "completed"

    async def _finish_failed(self, journal: RunJournal, error: str) -> None:
        async with self.deps.database.transaction() as uow:
            event = await self._fail_in(uow, journal, error)
        if event is not None:
            await journal.publish([event])
            self.outcome = "failed"

    async def _fail_in(self, uow: Any, journal: RunJournal, error: str) -> RunEvent | None:
        updated = await uow.runs.update_status(
            self.tenant_id,
            self.run_id,
            RunStatus.FAILED,
            expected=(RunStatus.RUNNING, RunStatus.CANCELLING),
            error=error,
            finished_at=utcnow(),
            release_lease=True,
        )
        if updated is None:
            return None
        await request_next(uow, updated)
        event: RunEvent = await journal.milestone(uow, EventType.FAILED, {"error": error})
        return event

    async def _finish_cancelled(self, journal: RunJournal) -> None:
        async with self.deps.database.transaction() as uow:
            run = await uow.runs.get(self.tenant_id, self.run_id)
            result = None
            if run is not None:
                result = await finish_cancelled(
                    uow, journal, run, (RunStatus.RUNNING, RunStatus.CANCELLING)
                )
        if result is not None:
            await journal.publish(result[1])
            self.outcome = "cancelled"

    async def _hand_back(self) -> None:
        """Shutdown interrupted the attempt: release the lease so the run is redone later."""
        started = time.perf_counter()
        async with self.deps.database.transaction() as uow:
            await uow.runs.update_status(
                self.tenant_id,
                self.run_id,
                RunStatus.QUEUED,
                expected=(RunStatus.RUNNING,),
                release_lease=True,
            )
        self.outcome = "handed_back"
        _log.info(
            "handed back run %s",
            self.run_id,
            extra={"elapsed_ms": round((time.perf_counter() - started) * 1000, 1)},
        )


def _usage_json(usage: Usage | None) -> dict[str, int]:
    if usage is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]
