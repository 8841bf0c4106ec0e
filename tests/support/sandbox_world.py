"""A started `SandboxProvider` over a fake data dir with real workspaces, at either level."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from soma.config.tools import SandboxSettings, ToolsSettings
from soma.tools.port import ToolCallContext, ToolOutcome
from soma.tools.sandbox.provider import SandboxProvider
from soma.tools.workspace import Workspaces

LEVELS = ("bubblewrap", "rlimits")
SYSTEM_PYTHON = Path("/usr/bin/python3")
"""The rlimits level drops root to an unprivileged uid, which cannot read an interpreter under
/root (pyenv): there the tests use Debian's (scripts/system-deps.sh installs it)."""
SECRET = "data-dir-secret-6b1f0c"


def sandbox_settings(level: str, **overrides: Any) -> ToolsSettings:
    tools = {
        key: overrides.pop(key)
        for key in ("call_timeout_s", "max_concurrent_calls", "workspace_quota_bytes")
        if key in overrides
    }
    sandbox: dict[str, Any] = {
        "isolation": level,
        "max_processes": 16,
        "memory_bytes": 512 << 20,
        "max_output_bytes": 256 << 10,
    }
    if level == "rlimits":
        sandbox["python"] = SYSTEM_PYTHON
    sandbox.update(overrides)
    return ToolsSettings(
        **({"call_timeout_s": 30.0, "max_concurrent_calls": 8} | tools),
        sandbox=SandboxSettings(**sandbox),
    )


@dataclass
class SandboxWorld:
    provider: SandboxProvider
    level: str
    data_dir: Path
    workspaces: Workspaces

    @property
    def secret_file(self) -> Path:
        return self.data_dir / "soma.db"

    def workspace(self, session: str = "s1", tenant: str = "t1") -> Path:
        return self.workspaces.for_session(tenant, session)

    async def call(
        self,
        kind: str,
        source: str,
        *,
        session: str = "s1",
        tenant: str = "t1",
        timeout_s: float = 20.0,
    ) -> ToolOutcome:
        workspace = self.workspace(session, tenant)
        context = ToolCallContext(tenant, "agent", session, "run", "call", workspace, timeout_s)
        tool = {t.spec.name: t for t in self.provider.tools()}[kind]
        key = "code" if kind == "python" else "command"
        return await tool.run({key: source}, context)

    def leftovers(self) -> list[psutil.Process]:
        """Processes still alive as one of the sandbox's uids (the platform runs as root); the
        killed ones get a few seconds to finish dying (a pid namespace tears down async)."""
        uids = self.provider.uids_used()
        assert uids is not None, "the sandbox tests run as root, like CI"
        found = []
        for proc in psutil.process_iter(["uids", "status"]):
            try:
                if proc.info["uids"].real in uids and proc.info["status"] != "zombie":
                    found.append(proc)
            except (psutil.Error, AttributeError):
                continue
        _, alive = psutil.wait_procs(found, timeout=5)
        return alive


@asynccontextmanager
async def sandbox_world(
    tmp_path: Path, level: str, **overrides: Any
) -> AsyncIterator[SandboxWorld]:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    (data_dir / "soma.db").write_text(SECRET)
    (data_dir / "soma.db").chmod(0o600)
    settings = sandbox_settings(level, **overrides)
    provider = SandboxProvider(settings, protected=[data_dir])
    await provider.start()
    try:
        yield SandboxWorld(provider, level, data_dir, Workspaces(data_dir / "workspaces", 10 << 20))
    finally:
        await provider.stop()
