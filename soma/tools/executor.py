"""Settling one tool call: at most once, checked, policy-gated, bounded, measured.

In order: claim the call (a call already started is never run again), check it is a tool the
agent may use and that its arguments fit the schema (else the model reads why, nothing ran),
ask the policy (`tool.execute`: allow, deny, or require a person's approval), then run it
within the time budget and cut its output to what a model should read.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from opentelemetry.trace import Tracer
from prometheus_client import Counter, Histogram

from soma.config.tools import ToolsSettings
from soma.core.clock import utcnow
from soma.observability.metrics import LATENCY_BUCKETS, Metrics
from soma.policy.port import Decision, PolicyInput, Subject
from soma.runs.tool_store import Settlement, ToolStore
from soma.storage.repositories.agents import Agent
from soma.storage.repositories.runs import Run
from soma.storage.repositories.tool_calls import ToolCall
from soma.tools.catalog import Catalog
from soma.tools.port import ToolCallContext, ToolOutcome
from soma.tools.workspace import Workspaces

_log = logging.getLogger("soma.tools")
INTERRUPT_GRACE_S = 10.0
"""Past its time budget plus this, a call still marked running was interrupted (its executor
would have stopped it by then)."""


class PolicyDecider(Protocol):
    async def decide(self, input: PolicyInput) -> Decision: ...


class ToolMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.executions = Counter(
            "soma_tool_executions_total",
            "Tool calls settled, by tool and outcome (ok, error, refused, approval, skipped).",
            ["tool", "outcome"],
            registry=metrics.registry,
        )
        self.duration = Histogram(
            "soma_tool_duration_seconds",
            "Time a tool took to run.",
            ["tool"],
            buckets=LATENCY_BUCKETS,
            registry=metrics.registry,
        )


@dataclass(frozen=True)
class ExecutorDeps:
    store: ToolStore
    catalog: Catalog
    workspaces: Workspaces
    policy: PolicyDecider
    settings: ToolsSettings
    metrics: ToolMetrics
    tracer: Tracer
    clock: Callable[[], datetime] = utcnow


class Executor:
    def __init__(self, deps: ExecutorDeps) -> None:
        self._deps = deps
        self._slots = asyncio.Semaphore(deps.settings.max_concurrent_calls)

    def interrupted_before(self, now: datetime) -> datetime:
        """A call started before this and still running was interrupted."""
        budget = self._deps.settings.call_timeout_s + INTERRUPT_GRACE_S
        return now - timedelta(seconds=budget)

    async def settle(
        self, run: Run, agent: Agent | None, call: ToolCall, *, orphan: bool = False
    ) -> Settlement | None:
        """What became of `call`; None when there is nothing to do (another delivery has it,
        or it has its result already). `orphan`: a running call is known to be interrupted."""
        deps = self._deps
        if call.status == "denied":
            return Settlement(call, "refused", call.error or "refused", after_approval=True)
        if call.status not in ("pending", "approved", "running"):
            return None
        now = deps.clock()
        after_approval = call.status == "approved"
        if call.status == "running":
            started = call.started_at or call.created_at
            if not orphan and started > self.interrupted_before(now):
                return None  # still within its budget: whoever runs it will record it
            return await self._interrupted(call, now, orphan)
        claimed = await deps.store.start(call.tenant_id, call.id, now, (call.status,))
        if claimed is None:
            return None
        if agent is None:
            return self._count(Settlement(claimed, "error", "the run's agent no longer exists"))
        return await self._checked(run, agent, claimed, after_approval)

    async def _interrupted(self, call: ToolCall, now: datetime, orphan: bool) -> Settlement | None:
        tool = self._deps.catalog.get(call.name)
        if tool is not None and tool.spec.idempotent:
            before = now if orphan else self.interrupted_before(now)
            store = self._deps.store
            again = await store.restart(call.tenant_id, call.id, now, before)
            if again is None:
                return None
            loaded = await store.load(call.tenant_id, call.run_id, ())
            if loaded is None or loaded.agent is None:
                return None
            run, agent = loaded.run, loaded.agent
            return await self._run(run, agent, again, after_approval=False, checked=True)
        text = (
            "interrupted: the tools service stopped while this call ran; it was not run again "
            "because it is not safe to repeat"
        )
        return self._count(Settlement(call, "error", text, audit="tool.execute"))

    async def _checked(
        self, run: Run, agent: Agent, call: ToolCall, after_approval: bool
    ) -> Settlement:
        deps = self._deps
        tool = deps.catalog.get(call.name)
        if tool is None:
            return self._count(Settlement(call, "error", f"there is no tool named {call.name!r}"))
        if not any(fnmatch.fnmatchcase(call.name, p) for p in agent.tools if p):
            refusal = f"the agent {agent.name!r} may not use the tool {call.name!r}"
            return self._count(Settlement(call, "refused", refusal, audit="tool.refused"))
        if "_invalid" in call.args and len(call.args) == 1:
            return self._count(Settlement(call, "error", "the arguments are not a JSON object"))
        problems = deps.catalog.validate(call.name, call.args)
        if problems:
            text = "invalid arguments: " + "; ".join(problems)
            return self._count(Settlement(call, "error", text))
        if not after_approval:
            decision = await deps.policy.decide(_policy_input(run, agent, call))
            if decision.require_approval:
                return self._count(Settlement(call, "awaiting_approval"), "approval")
            if not decision.allow:
                refusal = f"refused by policy: {decision.reason}"
                denied = Settlement(
                    call, "refused", refusal, audit="policy.deny", reason=decision.reason
                )
                return self._count(denied)
        return await self._run(run, agent, call, after_approval, checked=True)

    async def _run(
        self, run: Run, agent: Agent, call: ToolCall, after_approval: bool, *, checked: bool
    ) -> Settlement:
        deps = self._deps
        tool = deps.catalog.get(call.name)
        assert tool is not None and checked
        context = ToolCallContext(
            tenant_id=run.tenant_id,
            agent_id=agent.id,
            session_id=run.session_id,
            run_id=run.id,
            call_id=call.call_id,
            workspace=deps.workspaces.for_session(run.tenant_id, run.session_id),
            timeout_s=deps.settings.call_timeout_s,
        )
        started = time.perf_counter()
        with deps.tracer.start_as_current_span("tool " + call.name) as span:
            span.set_attribute("soma.tool", call.name)
            span.set_attribute("soma.tool_call_id", call.id)
            async with self._slots:
                outcome = await self._outcome(tool.run, call, context)
            span.set_attribute("soma.tool.status", outcome.status)
        deps.metrics.duration.labels(call.name).observe(time.perf_counter() - started)
        output = self._bounded(outcome.output)
        status = "ok" if outcome.status == "ok" else "error"
        settled = Settlement(
            call, status, output, outcome.detail, after_approval, audit="tool.execute"
        )
        return self._count(settled)

    async def _outcome(self, run: Any, call: ToolCall, context: ToolCallContext) -> ToolOutcome:
        timeout_s = self._deps.settings.call_timeout_s
        try:
            async with asyncio.timeout(timeout_s + 1.0):
                outcome: ToolOutcome = await run(dict(call.args), context)
                return outcome
        except TimeoutError:
            return ToolOutcome.error(f"the tool did not finish within {timeout_s:g}s")
        except Exception as exc:  # the tool broke: the model learns that much, the log more
            _log.exception("tool %s failed", call.name)
            return ToolOutcome.error(f"the tool failed ({type(exc).__name__})")

    def _bounded(self, output: str) -> str:
        limit = self._deps.settings.max_output_chars
        if len(output) <= limit:
            return output
        return output[:limit] + f"\n[output cut: {len(output) - limit} more characters]"

    def _count(self, settled: Settlement, outcome: str | None = None) -> Settlement:
        self._deps.metrics.executions.labels(settled.call.name, outcome or settled.status).inc()
        return settled


def _policy_input(run: Run, agent: Agent, call: ToolCall) -> PolicyInput:
    approval = any(fnmatch.fnmatchcase(call.name, p) for p in agent.settings.require_approval)
    return PolicyInput(
        action="tool.execute",
        tenant=run.tenant_id,
        # The call acts for the agent (its run was accepted from a chat key).
        subject=Subject(f"agent:{agent.id}", ("chat",)),
        resource={
            "tenant_id": run.tenant_id,
            "tool": call.name,
            "agent": agent.name,
            "agent_id": agent.id,
            "args": call.args,
            "requires_approval": approval,
        },
        context={"run_id": run.id, "session_id": run.session_id},
    )
