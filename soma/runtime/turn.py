"""One attempt at one run: claim it, call the model, stream deltas, persist the outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from soma.bus.port import OutgoingMessage
from soma.bus.topics import CONVERSATION_OUTBOUND
from soma.config.settings import LLMSettings, RuntimeSettings
from soma.core.clock import utcnow
from soma.core.events import Envelope
from soma.core.ids import new_id
from soma.llm.accumulate import ResultBuilder
from soma.llm.errors import public_error
from soma.llm.types import ChatChunk, ChatRequest, ToolSpec, Usage
from soma.runs.commands import finish_run, run_request
from soma.runs.events import EventType, RunStatus
from soma.runs.journal import RunJournal
from soma.runs.port import EventStreams
from soma.runs.store import Claim, Claimed, Completion, RunStore, reply_key
from soma.runs.tool_steps import park_for_tools
from soma.runs.tool_store import MAX_CALLS_PER_STEP as MAX_CALLS
from soma.runs.tool_store import ToolStore
from soma.runs.views import message_json
from soma.runtime.context import build_context, turns_before
from soma.runtime.inflight import Handle, InFlight
from soma.runtime.recall import RecallDenied, Recaller, memory_prompt
from soma.storage.database import Database
from soma.storage.repositories.messages import Message
from soma.storage.repositories.runs import Run
from soma.tools.published import CatalogReader

_log = logging.getLogger("soma.runtime")
HISTORY_LIMIT = 200
REPLY_RESERVE_TOKENS = 512
_ENDED = (RunStatus.RUNNING, RunStatus.CANCELLING)


class ChatModels(Protocol):
    """The model router as the runtime sees it."""

    def stream(self, model: str, request: ChatRequest) -> AsyncIterator[ChatChunk]: ...


class TokenBudget(Protocol):
    """Each tenant's LLM tokens per window."""

    async def tokens_left(self, tenant_id: str) -> str | None:
        """None while the tenant may call a model; else why not."""
        ...

    async def spend_tokens(self, tenant_id: str, tokens: int) -> None: ...


class Attachments(Protocol):
    async def expand(self, tenant_id: str, history: Sequence[Message]) -> list[Message]:
        """`history` with the attachments of its messages in their content."""
        ...


@dataclass(frozen=True)
class TurnDeps:
    database: Database
    store: RunStore
    tool_store: ToolStore
    streams: EventStreams
    models: ChatModels
    tools: CatalogReader
    inflight: InFlight
    runtime: RuntimeSettings
    llm: LLMSettings
    owner: str
    tokens: TokenBudget
    attachments: Attachments
    recaller: Recaller | None = None
    """None when no memory service runs in this process (agents with memory then fail)."""


class Turn:
    """Executes one delivery of a run request; safe to run again for the same run."""

    def __init__(self, deps: TurnDeps, tenant_id: str, run_id: str) -> None:
        self.deps = deps
        self.tenant_id = tenant_id
        self.run_id = run_id
        self.outcome = "skipped"

    async def execute(self) -> None:
        deps = self.deps
        now = utcnow()
        claimed = await deps.store.claim(
            Claim(
                tenant_id=self.tenant_id,
                run_id=self.run_id,
                owner=deps.owner,
                now=now,
                lease_until=now + timedelta(seconds=deps.runtime.lease_s),
                max_attempts=deps.runtime.max_attempts,
                history_limit=HISTORY_LIMIT,
            )
        )
        if claimed is None:
            return
        run = claimed.run
        journal = RunJournal(deps.streams, self.run_id, run.attempt)
        journal.event(EventType.STARTED)  # the store wrote it (or, out of attempts, skipped it)
        if claimed.started is None:
            error = f"gave up after {run.retries} attempts"
            await self._finish(journal, run, RunStatus.FAILED, error)
            return
        await journal.publish([claimed.started])
        task = asyncio.current_task()
        assert task is not None
        handle = deps.inflight.register(self.run_id, task)
        try:
            await self._run_claimed(claimed, journal, handle)
        except asyncio.CancelledError:
            if not handle.interrupted or task.cancelling() > 1:
                # Shutdown: release the lease so another attempt redoes the run.
                await asyncio.shield(self._hand_back())
                raise
            task.uncancel()
            if handle.stop_reason == "cancel":
                await self._finish(journal, run, RunStatus.CANCELLED)
            else:
                self.outcome = "abandoned"
        finally:
            deps.inflight.unregister(handle)

    async def _run_claimed(self, claimed: Claimed, journal: RunJournal, handle: Handle) -> None:
        deps, run, agent = self.deps, claimed.run, claimed.agent
        if agent is None:
            await self._finish(journal, run, RunStatus.FAILED, "the run's agent no longer exists")
            return
        if agent.model not in deps.llm.models:
            error = f"agent model {agent.model!r} is not configured"
            await self._finish(journal, run, RunStatus.FAILED, error)
            return
        tools: list[ToolSpec] = []
        if agent.tools:
            catalog = await deps.tools.get()
            if catalog is None:
                error = "the agent's tools are unavailable: no tools service is running"
                await self._finish(journal, run, RunStatus.FAILED, error)
                return
            tools = [
                ToolSpec(t.name, t.description, t.parameters)
                for t in catalog.for_patterns(agent.tools)
            ]
        said = await self._history(claimed)
        recalled = ""
        if agent.memory:
            try:
                recalled = await self._recall(claimed, said)
            except Exception as exc:
                _log.warning("run %s: recall failed: %s", self.run_id, _one_line(exc))
                error = f"the agent's memory is unavailable: {_one_line(exc)}"
                await self._finish(journal, run, RunStatus.FAILED, error)
                return
        history = await deps.attachments.expand(self.tenant_id, said)
        budget = deps.llm.models[agent.model].context_tokens - REPLY_RESERVE_TOKENS
        messages = build_context(agent.instructions, history, budget, recalled)
        request = ChatRequest(messages=messages, tools=tools)
        spent = await deps.tokens.tokens_left(self.tenant_id)
        if spent is not None:
            await self._finish(journal, run, RunStatus.FAILED, spent)
            return
        timeout_s = agent.settings.run_timeout_s
        handle.interruptible = True
        try:
            if handle.stop_reason is not None:
                handle.interrupt()
                await asyncio.sleep(0)  # delivers the cancellation here
            async with asyncio.timeout(timeout_s):
                reply = await self._generate(agent.model, request, journal)
        except TimeoutError:
            handle.interruptible = False
            error = f"run timed out after {timeout_s:g}s"
            await self._finish(journal, run, RunStatus.FAILED, error)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            handle.interruptible = False
            # The operator's log gets the upstream's own words; the tenant a sentence without
            # addresses (run.error is visible to every chat key of the tenant).
            _log.warning("run %s failed: %s", self.run_id, _one_line(exc))
            await self._finish(journal, run, RunStatus.FAILED, public_error(exc))
            return
        handle.interruptible = False
        calls = reply.tool_calls()
        if not calls:
            await self._complete(claimed, journal, reply)
        elif run.steps + 1 >= agent.settings.max_steps:
            error = f"the run reached max_steps ({agent.settings.max_steps}) without an answer"
            await self._finish(journal, run, RunStatus.FAILED, error)
        elif len(calls) > MAX_CALLS:
            error = f"the model asked for {len(calls)} tool calls at once ({MAX_CALLS} max)"
            await self._finish(journal, run, RunStatus.FAILED, error)
        else:
            await self._park(claimed, journal, reply)

    async def _history(self, claimed: Claimed) -> list[Message]:
        """The conversation up to this run's question, as the model should see it."""
        run = claimed.run
        user = next((m for m in claimed.history if m.id == run.message_id), None)
        history = claimed.history
        if user is None and run.message_id is not None:
            # More than HISTORY_LIMIT messages arrived after this one: read up to it.
            async with self.deps.database.read() as uow:
                user = await uow.messages.get(self.tenant_id, run.message_id)
                if user is not None:
                    history = await uow.messages.history(
                        self.tenant_id, run.session_id, limit=HISTORY_LIMIT, up_to_seq=user.seq
                    )
        return [] if user is None else turns_before(history, self.run_id, user.seq)

    async def _recall(self, claimed: Claimed, history: list[Message]) -> str:
        """The memories of the session's scope most relevant to the question, as a prompt."""
        if self.deps.recaller is None:
            raise RuntimeError("no memory service runs in this worker")
        agent = claimed.agent
        assert agent is not None
        question = next((m.content for m in reversed(history) if m.role == "user"), "")
        if not question.strip():
            return ""
        try:
            found = await self.deps.recaller.memories(self.tenant_id, agent, claimed.user, question)
        except RecallDenied as denied:
            _log.info("run %s: policy denied memory.read: %s", self.run_id, denied)
            return ""
        return memory_prompt(found) if found else ""

    async def _generate(
        self, model: str, request: ChatRequest, journal: RunJournal
    ) -> ResultBuilder:
        """One model call: stream its text (as deltas) and collect its tool calls."""
        reply = ResultBuilder()
        try:
            async for chunk in self.deps.models.stream(model, request):
                reply.add(chunk)
                if chunk.text:
                    await journal.delta(chunk.text)
        finally:
            # Whatever the call reported counts, even when the run goes no further.
            if reply.usage is not None:
                used = reply.usage.prompt_tokens + reply.usage.completion_tokens
                await asyncio.shield(self.deps.tokens.spend_tokens(self.tenant_id, used))
        return reply

    async def _park(self, claimed: Claimed, journal: RunJournal, reply: ResultBuilder) -> None:
        """The model asked for tools: write the step and leave the run to the tools service."""
        run = claimed.run
        usage = _usage_json(run.usage, reply.usage)
        calls = reply.tool_calls()
        parked = await park_for_tools(self.deps.tool_store, run, journal, reply.text, calls, usage)
        if parked is None:
            # A cancel landed while the step was being written: it wins.
            await self._finish(journal, run, RunStatus.CANCELLED)
            return
        await journal.publish(parked.events)
        self.outcome = "awaiting_tools"

    async def _complete(self, claimed: Claimed, journal: RunJournal, reply: ResultBuilder) -> None:
        run, now = claimed.run, utcnow()
        usage = _usage_json(run.usage, reply.usage)
        message = Message(
            id=new_id(),
            tenant_id=self.tenant_id,
            session_id=run.session_id,
            run_id=self.run_id,
            role="assistant",
            content=reply.text,
            tool_calls=None,
            tool_call_id=None,
            metadata={"model": reply.model} if reply.model else {},
            seq=claimed.reply_seq,
            idempotency_key=reply_key(self.run_id),
            created_at=now,
        )
        body = message_json(message)
        events = [
            journal.event(EventType.MESSAGE_COMPLETED, {"message": body}),
            journal.event(EventType.COMPLETED, {"usage": usage}),
        ]
        outbound = Envelope(
            type="message.completed",
            tenant_id=self.tenant_id,
            session_id=run.session_id,
            run_id=self.run_id,
            payload={"message": body, "agent_id": run.agent_id},
        )
        announce = OutgoingMessage(CONVERSATION_OUTBOUND, run.session_id, outbound.to_bytes())
        completed = await self.deps.store.complete(
            Completion(
                tenant_id=self.tenant_id,
                run_id=self.run_id,
                usage=usage,
                finished_at=now,
                reply=message,
                events=events,
                outbound=announce,
                next_request=run_request,
            )
        )
        if completed is None:
            # A cancel landed while the reply was being written: it wins.
            await self._finish(journal, run, RunStatus.CANCELLED)
            return
        await journal.publish(events)
        self.outcome = "completed"

    async def _finish(
        self, journal: RunJournal, run: Run, status: RunStatus, error: str | None = None
    ) -> None:
        if status == RunStatus.CANCELLED:
            event = journal.event(EventType.CANCELLED, {"reason": "cancelled"})
        else:
            event = journal.event(EventType.FAILED, {"error": error})
        if await finish_run(self.deps.store, journal, run, status, _ENDED, event, error):
            self.outcome = str(status)

    async def _hand_back(self) -> None:
        """Shutdown interrupted the attempt: release the lease so the run is redone later."""
        started = time.perf_counter()
        await self.deps.store.hand_back(self.tenant_id, self.run_id, self.deps.owner)
        self.outcome = "handed_back"
        _log.info(
            "handed back run %s",
            self.run_id,
            extra={"elapsed_ms": round((time.perf_counter() - started) * 1000, 1)},
        )


def _usage_json(before: dict[str, Any] | None, call: Usage | None) -> dict[str, int]:
    """The run's usage so far (earlier steps) plus this model call's."""
    prompt = int((before or {}).get("prompt_tokens", 0)) + (call.prompt_tokens if call else 0)
    completion = int((before or {}).get("completion_tokens", 0)) + (
        call.completion_tokens if call else 0
    )
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]
