"""Escape attempts against the python/shell sandbox: each contained, the platform unharmed.

Every attempt runs at the level(s) that promise to stop it: bubblewrap hides the system and the
network; both levels bound processes, memory, time and output, scrub the environment and (the
platform being root, as in CI) run calls as an unprivileged uid of their own.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.sandbox_world import LEVELS, SECRET, SandboxWorld, sandbox_world

pytestmark = pytest.mark.integration


@pytest.fixture(params=LEVELS)
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SandboxWorld]:
    async with sandbox_world(tmp_path, request.param) as world:
        yield world


@pytest.fixture
async def bwrap_world(tmp_path: Path) -> AsyncIterator[SandboxWorld]:
    async with sandbox_world(tmp_path, "bubblewrap") as world:
        yield world


async def assert_still_serving(world: SandboxWorld) -> None:
    """After an attempt: nothing of it left running, and the next call works."""
    assert world.leftovers() == []
    outcome = await world.call("python", "print('alive')")
    assert (outcome.status, outcome.output) == ("ok", "alive\n")
    assert (await world.provider.health()).status == "healthy"


def _existing(paths: list[str]) -> list[str]:
    return [path for path in paths if os.path.exists(path)]


async def test_etc_shadow_is_unreadable(world: SandboxWorld) -> None:
    outcome = await world.call("shell", "cat /etc/shadow")
    assert outcome.status == "error"
    assert "root:" not in outcome.output
    expected = "No such file" if world.level == "bubblewrap" else "Permission denied"
    assert expected in outcome.output
    await assert_still_serving(world)


async def test_the_data_dir_is_unreadable(world: SandboxWorld) -> None:
    code = (
        "import os\n"
        f"for path in [{str(world.secret_file)!r}, {str(world.data_dir)!r}, '../..', '../../..']:\n"
        "    try:\n"
        "        print(open(path).read() if path.endswith('.db') else os.listdir(path))\n"
        "    except OSError as exc:\n"
        "        print(path, type(exc).__name__)\n"
    )
    outcome = await world.call("python", code)
    assert SECRET not in outcome.output
    # No listing shows the data dir's entries.
    assert "'soma.db'" not in outcome.output and "'workspaces'" not in outcome.output
    if world.level == "bubblewrap":
        # The host path does not exist in the sandbox; /workspace/.. is the sandbox's own root.
        assert f"{world.secret_file} FileNotFoundError" in outcome.output
    else:
        assert f"{world.secret_file} PermissionError" in outcome.output
    await assert_still_serving(world)


async def test_writes_outside_the_workspace_fail(world: SandboxWorld, tmp_path: Path) -> None:
    # A root-owned directory like the platform's own (0755), and the system's directories.
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    outside.chmod(0o755)
    targets = [str(outside / "planted"), "/usr/planted", "/etc/planted", "/planted"]
    code = (
        f"for path in {targets!r}:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        print(path, 'WRITTEN')\n"
        "    except OSError as exc:\n"
        "        print(path, type(exc).__name__)\n"
    )
    outcome = await world.call("python", code)
    assert outcome.status == "ok"
    assert "WRITTEN" not in outcome.output
    assert _existing(targets) == []
    await assert_still_serving(world)


async def test_a_world_writable_directory_outside_is_not_there(bwrap_world: SandboxWorld) -> None:
    open_dir = bwrap_world.data_dir.parent / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    outcome = await bwrap_world.call("shell", f"echo x > {open_dir}/planted")
    assert outcome.status == "error"
    assert "Directory nonexistent" in outcome.output
    assert list(open_dir.iterdir()) == []
    await assert_still_serving(bwrap_world)


async def test_no_socket_reaches_the_platform_or_the_outside(bwrap_world: SandboxWorld) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = (
        "import socket\n"
        "print('interfaces', [name for _, name in socket.if_nameindex()])\n"
        f"for host, port in [('127.0.0.1', {port}), ('1.1.1.1', 53), ('8.8.8.8', 443)]:\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=3).close()\n"
        "        print(host, 'CONNECTED')\n"
        "    except OSError as exc:\n"
        "        print(host, exc.errno)\n"
    )
    try:
        outcome = await bwrap_world.call("python", code)
        assert outcome.status == "ok"
        assert "CONNECTED" not in outcome.output
        # A network namespace of its own: only a loopback that is down, and no route anywhere.
        assert "interfaces ['lo']" in outcome.output
        assert "127.0.0.1 111" in outcome.output  # ECONNREFUSED: its own loopback
        for host in ("1.1.1.1", "8.8.8.8"):
            assert f"{host} 101" in outcome.output  # ENETUNREACH
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    await assert_still_serving(bwrap_world)


async def test_a_fork_bomb_hits_the_process_limit(world: SandboxWorld) -> None:
    # Bounded by the test itself: at most 200 children that sleep and are killed at the end,
    # so a failed containment cannot take the machine down.
    code = (
        "import os, signal, time\n"
        "children, error = [], None\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as exc:\n"
        "        error = exc.errno\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    children.append(pid)\n"
        "for pid in children:\n"
        "    os.kill(pid, signal.SIGKILL)\n"
        "print('forked', len(children), 'errno', error)\n"
    )
    outcome = await world.call("python", code)
    assert outcome.status == "ok", outcome.output
    forked = int(outcome.output.split()[1])
    assert forked < 16  # max_processes of the world, the python process included
    assert "errno 11" in outcome.output  # EAGAIN
    await assert_still_serving(world)


async def test_a_shell_fork_bomb_is_contained(world: SandboxWorld) -> None:
    # Each level spawns at most 2 more: uncontained, 10 levels would be 2046 processes.
    bomb = "b() { [ $1 -lt 10 ] && { b $(($1+1)) & b $(($1+1)) & wait; }; sleep 0.2; }; b 0"
    outcome = await world.call("shell", bomb)
    assert "Cannot fork" in outcome.output
    await assert_still_serving(world)


async def test_a_4_gb_allocation_fails(world: SandboxWorld) -> None:
    outcome = await world.call("python", "data = bytearray(4 * 1024**3)\nprint(len(data))")
    assert outcome.status == "error"
    assert outcome.detail["stopped"] == "memory"
    assert "MemoryError" in outcome.output
    await assert_still_serving(world)


async def test_an_infinite_loop_is_killed_at_the_deadline(world: SandboxWorld) -> None:
    outcome = await world.call("python", "while True:\n    pass\n", timeout_s=1.5)
    assert outcome.status == "error"
    assert outcome.detail["stopped"] == "timeout"
    assert "timed out after 1.5 s" in outcome.output
    await assert_still_serving(world)


async def test_a_timeout_kills_background_and_detached_children(world: SandboxWorld) -> None:
    command = "sleep 300 & setsid sleep 301 & (sleep 302 &) ; while :; do :; done"
    outcome = await world.call("shell", command, timeout_s=1.5)
    assert outcome.detail["stopped"] == "timeout"
    await assert_still_serving(world)


async def test_detached_children_do_not_outlive_a_finished_call(world: SandboxWorld) -> None:
    outcome = await world.call("shell", "setsid sleep 300 > /dev/null 2>&1 & echo started")
    assert (outcome.status, outcome.output) == ("ok", "started\n")
    await assert_still_serving(world)


async def test_100_mb_of_output_is_cut_and_the_writer_killed(world: SandboxWorld) -> None:
    code = "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * (1 << 20))\n"
    outcome = await world.call("python", code)
    assert outcome.status == "error"
    assert outcome.detail["stopped"] == "output_limit"
    assert outcome.detail["output_truncated"] is True
    cap = world.provider._config.max_output_bytes
    assert outcome.output.count("x") == cap
    # Killed once past the cap: far less than the 100 MB was ever read.
    assert outcome.detail["output_bytes"] < 100 << 20
    await assert_still_serving(world)


async def test_the_platform_environment_is_invisible(
    world: SandboxWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOMA_SANDBOX_TEST_SECRET", "env-secret-93ab")
    monkeypatch.setenv("SOMA_LLM__MODELS__X__API_KEY", "sk-env-secret-77")
    assert os.environ["SOMA_SANDBOX_TEST_SECRET"] == "env-secret-93ab"
    shell = await world.call("shell", "env; cat /proc/1/environ 2>/dev/null | tr '\\0' '\\n'")
    python = await world.call("python", "import os\nprint(sorted(os.environ))")
    for outcome in (shell, python):
        assert "env-secret" not in outcome.output
        assert "SOMA_" not in outcome.output
    names = {line.split("=", 1)[0] for line in shell.output.splitlines() if "=" in line}
    assert names <= {"PATH", "HOME", "LANG", "USER", "LOGNAME", "SHELL", "TERM", "PWD", "SHLVL"}
    await assert_still_serving(world)


async def test_cancelling_a_call_kills_everything_it_started(world: SandboxWorld) -> None:
    workspace = world.workspace()
    task = asyncio.create_task(
        world.call("shell", "sleep 300 & setsid sleep 301 & touch started; sleep 303")
    )
    while not (workspace / "started").exists():
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_still_serving(world)


async def test_kernel_interfaces_that_widen_reach_are_refused(bwrap_world: SandboxWorld) -> None:
    # A user namespace would give the program capabilities over namespaces of its own; mount,
    # ptrace and io_uring are attack surface it has no use for (seccomp filter).
    code = (
        "import ctypes, os, threading\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "attempts = {\n"
        "    'userns': lambda: libc.unshare(0x10000000),\n"
        "    'mountns': lambda: libc.unshare(0x00020000),\n"
        "    'mount': lambda: libc.mount(b'none', b'/workspace', b'tmpfs', 0, None),\n"
        "    'ptrace': lambda: libc.ptrace(16, 1, 0, 0),\n"
        "    'io_uring': lambda: libc.syscall(425, 8, ctypes.c_void_p(0)),\n"
        "}\n"
        "for name, attempt in attempts.items():\n"
        "    print(name, attempt(), ctypes.get_errno())\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(3)\n"
        "print('fork', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
        "thread = threading.Thread(target=print, args=('thread ran',))\n"
        "thread.start()\n"
        "thread.join()\n"
    )
    outcome = await bwrap_world.call("python", code)
    assert outcome.status == "ok", outcome.output
    for name in ("userns", "mountns", "mount", "ptrace", "io_uring"):
        assert f"{name} -1 1\n" in outcome.output  # EPERM
    assert "fork 3\n" in outcome.output and "thread ran\n" in outcome.output
    assert bwrap_world.provider.describe()["seccomp"] is True
    await assert_still_serving(bwrap_world)
