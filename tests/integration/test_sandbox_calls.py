"""The python/shell sandbox doing its job: output, workspaces, limits, concurrency, and a start
that refuses a level the machine cannot give."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from soma.core.service import HealthStatus
from soma.tools.port import ToolCallContext
from soma.tools.sandbox.program import Program
from soma.tools.sandbox.provider import SandboxProvider, SandboxUnavailable
from tests.support.sandbox_world import (
    LEVELS,
    SYSTEM_PYTHON,
    SandboxWorld,
    sandbox_settings,
    sandbox_world,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=LEVELS)
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SandboxWorld]:
    async with sandbox_world(tmp_path, request.param) as world:
        yield world


async def test_python_prints(world: SandboxWorld) -> None:
    outcome = await world.call("python", "print(6 * 7)")
    assert (outcome.status, outcome.output) == ("ok", "42\n")
    assert outcome.detail["isolation"] == world.level
    assert outcome.detail["exit_code"] == 0


async def test_python_runs_isolated_from_the_platform_interpreter(world: SandboxWorld) -> None:
    code = "import sys\nprint(sys.flags.isolated, sys.flags.no_site, 'site' in sys.modules)"
    outcome = await world.call("python", code)
    assert outcome.output == "1 1 False\n"


async def test_a_failing_program_is_an_error_with_its_exit_code(world: SandboxWorld) -> None:
    outcome = await world.call("shell", "echo partial; echo broken >&2; exit 3")
    assert outcome.status == "error"
    assert outcome.detail["exit_code"] == 3
    assert outcome.output.startswith("failed: exit code 3")
    assert "[stdout]\npartial" in outcome.output and "[stderr]\nbroken" in outcome.output


async def test_a_nul_in_a_command_is_an_error_for_the_model(world: SandboxWorld) -> None:
    shell = await world.call("shell", "echo a\x00b")
    assert (shell.status, shell.output) == ("error", "the command contains a NUL character")


async def test_stderr_comes_along_with_a_success(world: SandboxWorld) -> None:
    outcome = await world.call("python", "import sys\nprint('out')\nprint('warn', file=sys.stderr)")
    assert outcome.status == "ok"
    assert outcome.output == "out\n\n[stderr]\nwarn\n"


async def test_files_persist_between_calls_of_a_session(world: SandboxWorld) -> None:
    written = await world.call("python", "open('notes.txt', 'w').write('kept')")
    assert written.status == "ok"
    read = await world.call("shell", "cat notes.txt && mkdir -p sub && echo more > sub/f")
    assert (read.status, read.output) == ("ok", "kept")
    listed = await world.call(
        "python", "import os\nprint(sorted(os.listdir('.')), open('sub/f').read())"
    )
    assert listed.output == "['notes.txt', 'sub'] more\n\n"
    assert (world.workspace() / "notes.txt").read_text() == "kept"


async def test_a_file_the_platform_wrote_can_be_changed_by_the_next_call(
    world: SandboxWorld,
) -> None:
    # The `files` tool writes as the platform's user; the next sandboxed call owns it.
    workspace = world.workspace()
    (workspace / "from_files_tool.txt").write_text("v1")
    (workspace / "folder").mkdir()
    outcome = await world.call("shell", "echo v2 > from_files_tool.txt && touch folder/new")
    assert outcome.status == "ok", outcome.output
    assert (workspace / "from_files_tool.txt").read_text() == "v2\n"


async def test_sessions_do_not_see_each_other(world: SandboxWorld) -> None:
    await world.call("python", "open('mine.txt', 'w').write('a-secret')", session="a")
    other_path = world.workspace("a") / "mine.txt"
    code = (
        "import os\n"
        "print(os.listdir('.'))\n"
        "try:\n"
        f"    print(open({str(other_path)!r}).read())\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    for session, tenant in (("b", "t1"), ("a", "t2")):
        outcome = await world.call("python", code, session=session, tenant=tenant)
        assert "a-secret" not in outcome.output
        assert outcome.output.startswith("[]\n")
        expected = "FileNotFoundError" if world.level == "bubblewrap" else "PermissionError"
        assert expected in outcome.output


async def test_over_quota_nothing_runs(tmp_path: Path) -> None:
    async with sandbox_world(tmp_path, "bubblewrap", workspace_quota_bytes=4096) as world:
        (world.workspace() / "big.bin").write_bytes(b"x" * 5000)
        outcome = await world.call("shell", "touch ran")
        assert outcome.status == "error"
        assert outcome.detail["stopped"] == "quota"
        assert "over its quota" in outcome.output
        assert not (world.workspace() / "ran").exists()
        (world.workspace() / "big.bin").unlink()
        assert (await world.call("shell", "touch ran")).status == "ok"


@pytest.mark.parametrize("level", LEVELS)
async def test_a_file_cannot_grow_past_the_file_size_limit(tmp_path: Path, level: str) -> None:
    async with sandbox_world(tmp_path, level, max_file_bytes=1 << 20) as world:
        code = "with open('big.bin', 'wb') as f:\n    f.write(b'x' * (4 << 20))\n"
        outcome = await world.call("python", code)
        assert outcome.status == "error"
        assert outcome.detail["stopped"] == "file_size"
        assert (world.workspace() / "big.bin").stat().st_size <= 1 << 20


@pytest.mark.parametrize("level", LEVELS)
async def test_cpu_time_is_limited(tmp_path: Path, level: str) -> None:
    async with sandbox_world(tmp_path, level, cpu_s=1) as world:
        outcome = await world.call("python", "while True:\n    pass\n", timeout_s=30)
        assert outcome.status == "error"
        assert outcome.detail["stopped"] == "cpu_limit"
        assert "CPU time limit of 1 s" in outcome.output


async def test_the_call_timeout_is_capped_by_settings(tmp_path: Path) -> None:
    async with sandbox_world(tmp_path, "bubblewrap", call_timeout_s=1.0) as world:
        outcome = await world.call("shell", "sleep 60", timeout_s=600)
        assert outcome.detail["stopped"] == "timeout"
        assert "timed out after 1 s" in outcome.output


async def test_calls_run_concurrently_up_to_the_bound(tmp_path: Path) -> None:
    async with sandbox_world(tmp_path, "bubblewrap", max_concurrent_calls=2) as world:
        # Calls of one session share the workspace: each counts the markers of calls running.
        code = (
            "import os, time, uuid\n"
            "mark = 'running-' + uuid.uuid4().hex\n"
            "open(mark, 'w').close()\n"
            "time.sleep(0.3)\n"
            "print(sum(name.startswith('running-') for name in os.listdir('.')))\n"
            "os.remove(mark)\n"
        )
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        tick_task = asyncio.create_task(ticker())
        outcomes = await asyncio.gather(*(world.call("python", code) for _ in range(6)))
        tick_task.cancel()
        assert [o.status for o in outcomes] == ["ok"] * 6
        assert max(int(o.output) for o in outcomes) <= 2
        assert ticks > 1  # the loop kept running while children ran
        assert world.leftovers() == []


async def test_many_sessions_at_once(tmp_path: Path) -> None:
    async with sandbox_world(tmp_path, "bubblewrap", max_concurrent_calls=4) as world:
        sessions = [f"s{i}" for i in range(10)]
        outcomes = await asyncio.gather(
            *(world.call("shell", f"echo {s} > id; cat id", session=s) for s in sessions)
        )
        assert [o.output for o in outcomes] == [f"{s}\n" for s in sessions]


async def test_health_and_describe_say_the_level(world: SandboxWorld) -> None:
    health = await world.provider.health()
    assert health.status == HealthStatus.HEALTHY
    assert f"isolation={world.level}" in health.detail
    described = world.provider.describe()
    assert described["level"] == world.provider.isolation == world.level
    assert described["network"] is (world.level == "rlimits")
    assert described["limits"]["processes"] == 16
    assert [t.spec.name for t in world.provider.tools()] == ["python", "shell"]
    assert not any(t.spec.idempotent for t in world.provider.tools())


async def test_a_missing_bwrap_fails_start_with_the_reason(tmp_path: Path) -> None:
    settings = sandbox_settings("bubblewrap", bwrap=tmp_path / "no-bwrap")
    provider = SandboxProvider(settings)
    with pytest.raises(SandboxUnavailable) as raised:
        await provider.start()
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("bubblewrap isolation is not available")
    assert "no-bwrap is missing" in message
    health = await provider.health()
    assert (health.status, health.detail) == (HealthStatus.UNHEALTHY, message)
    call = ToolCallContext("t", "a", "s", "r", "c", tmp_path, 5)
    with pytest.raises(RuntimeError):
        await provider.run(Program("python", "print(1)"), call)


async def test_an_interpreter_the_call_uid_cannot_run_fails_start(tmp_path: Path) -> None:
    # Root drops each call to an unprivileged uid: an interpreter only root can reach is no
    # good, and the rlimits level must say so instead of running calls as root.
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    shutil.copy2(SYSTEM_PYTHON.resolve(), private / "python3")
    provider = SandboxProvider(sandbox_settings("rlimits", python=private / "python3"))
    with pytest.raises(SandboxUnavailable) as raised:
        await provider.start()
    assert "rlimits isolation is not available" in str(raised.value)
    assert "Permission denied" in str(raised.value)
    assert (await provider.health()).status == HealthStatus.UNHEALTHY


async def test_a_protected_path_the_sandbox_would_see_fails_start() -> None:
    provider = SandboxProvider(sandbox_settings("bubblewrap"), protected=[Path("/usr/share")])
    with pytest.raises(SandboxUnavailable, match="/usr/share is inside /usr"):
        await provider.start()


async def test_stop_then_start_again(tmp_path: Path) -> None:
    async with sandbox_world(tmp_path, "bubblewrap") as world:
        await world.provider.stop()
        assert (await world.provider.health()).status == HealthStatus.STOPPED
        await world.provider.start()
        assert (await world.call("python", "print('again')")).output == "again\n"
