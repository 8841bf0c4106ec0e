"""The tools service composed over a `RuntimeStack` as `orchestrator.manifest` composes it,
with the real `files` built-in and tools of the test's choosing.

    tools = Tools(stack, tmp_path, [CountingTool()])
    await tools.start(stack)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace

from soma.core.service import Health
from soma.policy.service import create_policy
from soma.tools.builtins.files import FilesTool
from soma.tools.builtins.provider import BuiltinTools
from soma.tools.catalog import Catalog
from soma.tools.executor import Executor, ExecutorDeps, ToolMetrics
from soma.tools.port import ToolCallContext, ToolOutcome, ToolSpec
from soma.tools.service import ToolsService
from soma.tools.workspace import Workspaces
from tests.support.runtime_stack import RuntimeStack


class CountingTool:
    """`count`: sleeps a little and records every call it really ran."""

    def __init__(self, name: str = "count", idempotent: bool = False) -> None:
        self.ran: list[dict[str, Any]] = []
        self._spec = ToolSpec(
            name,
            "Counts its calls.",
            {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
            idempotent=idempotent,
        )

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    async def run(self, args: dict[str, Any], call: ToolCallContext) -> ToolOutcome:
        await asyncio.sleep(0.05)
        self.ran.append(args)
        return ToolOutcome.ok(f"counted {args['n']}")


class Tools:
    """The tools service over the stack's database, bus and cache."""

    def __init__(self, stack: RuntimeStack, tmp_path: Path, tools: Sequence[Any]) -> None:
        settings = stack.settings
        self.workspaces = Workspaces(tmp_path / "workspaces", settings.tools.workspace_quota_bytes)
        self.counter = next(t for t in tools if isinstance(t, CountingTool))
        self.by_name = {t.spec.name: t for t in tools}
        catalog = Catalog([BuiltinTools([FilesTool(self.workspaces), *tools])])
        # With memory the stack has started the policy engine already: one per metrics registry.
        self._own_policy = stack.policy is None
        self.policy = stack.policy or create_policy(settings, stack.metrics)
        tracer = trace.get_tracer("test")
        executor = Executor(
            ExecutorDeps(
                store=stack.database_service.tool_store,
                catalog=catalog,
                workspaces=self.workspaces,
                policy=self.policy,
                settings=settings.tools,
                metrics=ToolMetrics(stack.metrics),
                tracer=tracer,
            )
        )
        self.service = ToolsService(
            bus=stack.bus,
            database=stack.database,
            store=stack.database_service.tool_store,
            streams=stack.cache.streams,
            kv=stack.cache.kv,
            catalog=catalog,
            executor=executor,
            isolation="none (test tools)",
            runtime=settings.runtime,
            approval_timeout_s=settings.tools.approval_timeout_s,
            tracer=tracer,
            orphans_at_start=False,
        )

    async def start(self, stack: RuntimeStack) -> None:
        await stack.start(*([self.policy] if self._own_policy else []), self.service)

    async def health(self) -> Health:
        return await self.service.health()
