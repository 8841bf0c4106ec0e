"""`SandboxProvider`: the `python` and `shell` tools, run in child processes under the isolation
level configured (bubblewrap namespaces + rlimits, or rlimits alone), never a weaker one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from soma.config.tools import ToolsSettings
from soma.core.errors import StartupError
from soma.core.service import Health, HealthStatus
from soma.tools.builtins.python import PythonTool
from soma.tools.builtins.shell import ShellTool
from soma.tools.port import Tool, ToolCallContext, ToolOutcome
from soma.tools.sandbox import runner, seccomp
from soma.tools.sandbox.bwrap import WORKSPACE, Layout
from soma.tools.sandbox.limits import PRLIMIT, SETPRIV, Limits, setpriv_argv
from soma.tools.sandbox.outcome import to_outcome
from soma.tools.sandbox.prepare import WorkspaceRefused, prepare_workspace, resolve_workspace
from soma.tools.sandbox.probe import ProbeExpectations, probe_code, verdict
from soma.tools.sandbox.program import Program
from soma.tools.sandbox.uids import UidPool

SHELL = "/bin/sh"
_PATH = "/usr/local/bin:/usr/bin:/bin"
_PROBE_TIMEOUT_S = 20.0


class SandboxUnavailable(StartupError):
    """The configured isolation cannot be had on this machine (the message says why)."""


class SandboxProvider:
    """The `sandbox` tool provider. `protected` are paths calls must never read (the data dir)."""

    def __init__(self, settings: ToolsSettings, *, protected: Sequence[Path] = ()) -> None:
        self._settings = settings
        self._config = settings.sandbox
        self._limits = Limits.from_settings(settings.sandbox)
        self._protected = tuple(Path(os.path.realpath(p)) for p in protected)
        self._root = os.geteuid() == 0
        config = self._config
        self._uids = (
            UidPool(config.uid_base, config.uid_count, config.uid_lock_dir) if self._root else None
        )
        self._slots = asyncio.Semaphore(settings.max_concurrent_calls)
        self._untidy: set[int] = set()
        """Uids whose calls may have left processes behind: ended before they serve again."""
        self._interpreter = Path(os.path.realpath(self._config.python or sys.executable))
        self._layout: Layout | None = None
        self._runtime: Path | None = None
        self._seccomp: bytes | None = None
        self._failure: str | None = None
        self._started = False
        self._tools: tuple[Tool, ...] = (PythonTool(self), ShellTool(self))

    @property
    def name(self) -> str:
        return "sandbox"

    @property
    def isolation(self) -> str:
        """The isolation level calls run under (the configured one, or none at all)."""
        return self._config.isolation

    def uids_used(self) -> set[int] | None:
        """The uids calls of this provider ran as (the platform runs as root), else None."""
        return set(self._uids.used) if self._uids is not None else None

    def describe(self) -> dict[str, Any]:
        """The isolation in force, for `GET /v1/tools` and health."""
        bwrap = self.isolation == "bubblewrap"
        namespaces = ["mount", "pid", "net", "ipc", "uts"] if bwrap else []
        if bwrap and not self._root:
            namespaces.append("user")
        return {
            "level": self.isolation,
            "started": self._started,
            "network": not bwrap,
            "filesystem": "minimal read-only system + workspace" if bwrap else "host",
            "namespaces": namespaces,
            "seccomp": self._seccomp is not None,
            "uid": "one unprivileged uid per busy workspace" if self._root else "the platform's",
            "limits": self._limits.as_dict()
            | {"output_bytes": self._config.max_output_bytes, "wall_s": self._max_wall()},
        }

    def tools(self) -> Sequence[Tool]:
        return self._tools

    async def start(self) -> None:
        self._failure = None
        try:
            await self._start()
        except SandboxUnavailable as exc:
            self._failure = str(exc)
            self._drop_runtime()
            raise
        except Exception as exc:
            self._failure = f"{self.isolation} isolation is not available: {exc!r}"[:500]
            self._drop_runtime()
            raise SandboxUnavailable(self._failure) from exc
        self._started = True

    async def stop(self) -> None:
        self._started = False
        self._drop_runtime()

    async def health(self) -> Health:
        if self._failure is not None:
            return Health.unhealthy(self._failure)
        if not self._started:
            return Health(HealthStatus.STOPPED, f"isolation={self.isolation} (not started)")
        parts = ["namespaces", "rlimits"] if self.isolation == "bubblewrap" else ["rlimits"]
        if self._seccomp is not None:
            parts.append("seccomp")
        if self._root:
            parts.append("per-workspace uid")
        return Health.healthy(f"isolation={self.isolation} ({', '.join(parts)})")

    async def run(self, program: Program, call: ToolCallContext) -> ToolOutcome:
        if not self._started:
            raise RuntimeError("the sandbox is not started")
        return await self._execute(program, call)

    async def _execute(self, program: Program, call: ToolCallContext) -> ToolOutcome:
        workspace = await asyncio.to_thread(resolve_workspace, call.workspace)
        timeout_s = min(call.timeout_s, self._max_wall())
        async with self._slots:
            uid = self._uids.acquire(workspace) if self._uids is not None else None
            tidy = False
            try:
                quota = self._settings.workspace_quota_bytes
                try:
                    await asyncio.to_thread(prepare_workspace, workspace, quota, uid)
                except WorkspaceRefused as exc:
                    tidy = True
                    return ToolOutcome.error(str(exc), isolation=self.isolation, stopped="quota")
                filter_fd = self._seccomp_fd()
                try:
                    argv, env, cwd = self._command(program, workspace, uid, filter_fd)
                    stdin = program.source.encode() if program.kind == "python" else None
                    result = await runner.run(
                        argv,
                        stdin=stdin,
                        env=env,
                        cwd=cwd,
                        timeout_s=timeout_s,
                        max_output_bytes=self._config.max_output_bytes,
                        pass_fds=() if filter_fd is None else (filter_fd,),
                    )
                finally:
                    if filter_fd is not None:
                        os.close(filter_fd)
                # bwrap returns once its pid namespace is empty; a killed one may still be dying.
                tidy = self._layout is not None and result.stopped is None
            finally:
                if uid is not None:
                    await self._release(workspace, uid, tidy)
        return to_outcome(
            result,
            isolation=self.isolation,
            limits=self._limits,
            timeout_s=timeout_s,
            max_output=self._config.max_output_bytes,
        )

    def _max_wall(self) -> float:
        return self._settings.call_timeout_s

    def _seccomp_fd(self) -> int | None:
        """A pipe's read end holding the filter: bwrap reads it to the end, once per call."""
        if self._seccomp is None:
            return None
        read, write = os.pipe()
        with os.fdopen(write, "wb") as out:
            out.write(self._seccomp)  # a few hundred bytes: far below a pipe's buffer
        return read

    def _command(
        self, program: Program, workspace: Path, uid: int | None, seccomp_fd: int | None
    ) -> tuple[list[str], dict[str, str], Path]:
        if program.kind == "python":
            # -I: no environment, no user site, no script dir on the path; -S: no site at all.
            target = [str(self._interpreter), "-I", "-S", "-B", "-"]
        else:
            target = [SHELL, "-c", program.source]
        limited = [*self._limits.prlimit_argv(), *target]
        if self._layout is not None:
            env = _environment(WORKSPACE)
            sandbox = self._layout.argv(workspace, env, seccomp_fd)
            return [*sandbox, *setpriv_argv(uid), *limited], {"PATH": _PATH}, Path("/")
        # rlimits alone: the workspace is the working directory; PDEATHSIG ends the child with
        # the platform (bubblewrap does that itself under --die-with-parent).
        inner = [*setpriv_argv(uid, pdeathsig=True), *limited]
        return inner, _environment(str(workspace)), workspace

    async def _release(self, workspace: Path, uid: int, tidy: bool) -> None:
        assert self._uids is not None
        if not tidy:
            self._untidy.add(uid)
        last = self._uids.release(workspace)
        if last is None:
            return
        if last in self._untidy:
            self._untidy.discard(last)
            await asyncio.shield(self._retire(last))
        else:
            self._uids.free(last)

    async def _retire(self, uid: int) -> None:
        # Whatever the call left running as its uid (a daemonised child at the rlimits level;
        # a pid namespace still tearing down) ends before the uid serves another workspace.
        assert self._uids is not None
        try:
            proc = await asyncio.create_subprocess_exec(
                *setpriv_argv(uid),
                SHELL,
                "-c",
                "kill -KILL -1 2>/dev/null; exit 0",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                env={"PATH": _PATH},
                cwd="/",
            )
            await proc.wait()
        finally:
            self._uids.free(uid)

    async def _start(self) -> None:
        level = self.isolation
        fail = f"{level} isolation is not available"
        needed = [Path(PRLIMIT), Path(SETPRIV), Path(SHELL), self._interpreter]
        if level == "bubblewrap":
            needed.insert(0, self._config.bwrap)
        for path in needed:
            if not os.access(path, os.X_OK):
                raise SandboxUnavailable(f"{fail}: {path} is missing or not executable")
        if self._uids is not None:
            if self._config.uid_count < self._settings.max_concurrent_calls:
                raise SandboxUnavailable(
                    f"{fail}: tools.sandbox.uid_count is below tools.max_concurrent_calls"
                )
            try:
                self._uids.open()
            except OSError as exc:
                raise SandboxUnavailable(f"{fail}: uid locks: {exc}") from None
        if level == "bubblewrap":
            self._runtime = Path(tempfile.mkdtemp(prefix="soma-sandbox-"))
            self._layout = Layout.build(
                bwrap=self._config.bwrap,
                interpreter_prefix=self._interpreter.parent.parent,
                etc_files=self._write_identity(self._runtime),
                tmp_bytes=self._config.tmp_bytes,
                user_namespace=not self._root,
            )
            self._seccomp = seccomp.filter_program() if seccomp.supported() else None
            for secret in self._protected:
                for seen in self._layout.visible:
                    if secret == seen or seen in secret.parents:
                        raise SandboxUnavailable(
                            f"{fail}: {secret} is inside {seen}, which the sandbox reads"
                        )
        else:
            self._layout = None
            self._seccomp = None
        await self._probe(fail)

    async def _probe(self, fail: str) -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        workspace = Path(tempfile.mkdtemp(prefix="soma-sandbox-probe-"))
        expected_uids = self._uids.range if self._uids is not None else None
        try:
            call = ToolCallContext(
                "probe", "probe", "probe", "probe", "probe", workspace, _PROBE_TIMEOUT_S
            )
            code = probe_code(listener.getsockname()[1], self._protected)
            outcome = await self._execute(Program("python", code), call)
        finally:
            listener.close()
            shutil.rmtree(workspace, ignore_errors=True)
        if outcome.status != "ok":
            first = outcome.output.strip().splitlines()
            why = " / ".join(line for line in first if line and not line.startswith("["))[:300]
            if self._root:
                why += " (calls run as an unprivileged uid, which must be able to run it)"
            raise SandboxUnavailable(f"{fail}: the probe failed: {why}")
        expect = ProbeExpectations(self._limits, expected_uids, isolated=self._layout is not None)
        reason = verdict(outcome.output, expect)
        if reason is not None:
            raise SandboxUnavailable(f"{fail}: {reason}")

    def _write_identity(self, runtime: Path) -> list[tuple[Path, str]]:
        uids = list(self._uids.range) if self._uids is not None else [os.getuid()]
        users = ["root:x:0:0:root:/root:/usr/sbin/nologin"]
        groups = ["root:x:0:"]
        for uid in uids:
            users.append(f"sandbox:x:{uid}:{uid}:sandbox:{WORKSPACE}:{SHELL}")
            groups.append(f"sandbox:x:{uid}:")
        users.append("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin")
        groups.append("nogroup:x:65534:")
        files = []
        for name, lines in (("passwd", users), ("group", groups)):
            path = runtime / name
            path.write_text("\n".join(lines) + "\n")
            path.chmod(0o644)
            files.append((path, f"/etc/{name}"))
        return files

    def _drop_runtime(self) -> None:
        if self._runtime is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._runtime)
            self._runtime = None


def _environment(home: str) -> dict[str, str]:
    """All a call's processes get: never anything of the platform's own environment."""
    return {
        "PATH": _PATH,
        "HOME": home,
        "LANG": "C.UTF-8",
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "SHELL": SHELL,
        "TERM": "dumb",
    }
