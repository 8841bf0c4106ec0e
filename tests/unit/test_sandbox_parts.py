"""The sandbox's parts on their own: command lines, limits, uid leases, the workspace walk, the
output classification and the process supervisor (real child processes, no servers)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import struct
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from soma.config.tools import SandboxSettings
from soma.tools.sandbox import runner, seccomp
from soma.tools.sandbox.bwrap import WORKSPACE, Layout
from soma.tools.sandbox.limits import Limits, setpriv_argv
from soma.tools.sandbox.outcome import classify, exit_signal, to_outcome
from soma.tools.sandbox.prepare import MAX_DEPTH, WorkspaceRefused, prepare_workspace
from soma.tools.sandbox.probe import ProbeExpectations, verdict
from soma.tools.sandbox.runner import RunResult
from soma.tools.sandbox.uids import UidPool

LIMITS = Limits(cpu_s=5, memory_bytes=256 << 20, file_bytes=1 << 20, processes=8, open_files=64)


def _layout(user_namespace: bool, prefix: Path = Path("/opt/py/3.11")) -> Layout:
    return Layout.build(
        bwrap=Path("/usr/bin/bwrap"),
        interpreter_prefix=prefix,
        etc_files=[(Path("/run/x/passwd"), "/etc/passwd")],
        tmp_bytes=1 << 20,
        user_namespace=user_namespace,
    )


def _pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == flag]


def test_prlimit_sets_every_limit_then_runs_the_program() -> None:
    argv = LIMITS.prlimit_argv()
    assert argv[0] == "/usr/bin/prlimit" and argv[-1] == "--"
    assert set(argv[1:-1]) == {
        "--cpu=5:6",
        f"--as={256 << 20}",
        f"--fsize={1 << 20}",
        "--nproc=8",
        "--nofile=64",
        "--core=0",
    }


def test_setpriv_drops_to_the_uid_without_groups_or_capabilities() -> None:
    argv = setpriv_argv(2_100_000_003, pdeathsig=True)
    assert argv[0] == "/usr/bin/setpriv" and argv[-1] == "--"
    for flag in ("--reuid=2100000003", "--regid=2100000003", "--clear-groups"):
        assert flag in argv
    for flag in ("--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"):
        assert flag in argv
    assert "--pdeathsig=KILL" in argv
    assert setpriv_argv(None) == ["/usr/bin/setpriv", "--no-new-privs", "--"]


def test_bwrap_as_root_unshares_all_but_the_user_namespace() -> None:
    argv = _layout(user_namespace=False).argv(Path("/data/ws/t/s"), {"HOME": WORKSPACE})
    for flag in ("--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts"):
        assert flag in argv
    assert "--unshare-user" not in argv and "--unshare-all" not in argv
    assert "--die-with-parent" in argv and "--new-session" in argv
    assert argv[-1] == "--"


def test_bwrap_unprivileged_makes_a_user_namespace_and_forbids_more() -> None:
    argv = _layout(user_namespace=True).argv(Path("/data/ws/t/s"), {})
    assert argv[1:4] == ["--unshare-all", "--unshare-user", "--disable-userns"]


def test_bwrap_filesystem_is_read_only_but_the_workspace() -> None:
    argv = _layout(False).argv(Path("/data/ws/t/s"), {"HOME": WORKSPACE, "LANG": "C.UTF-8"})
    assert _pairs(argv, "--bind") == [("/data/ws/t/s", WORKSPACE)]
    ro = dict(_pairs(argv, "--ro-bind"))
    assert ro["/usr"] == "/usr"
    assert ro["/opt/py/3.11"] == "/opt/py/3.11"
    assert ro["/run/x/passwd"] == "/etc/passwd"
    assert "/etc" not in ro and "/" not in ro and "/home" not in ro
    # The prefix's parents are made reachable for an unprivileged uid, before the bind.
    opt = argv.index("/opt")
    assert argv[opt - 3 : opt] == ["--perms", "0755", "--dir"]
    assert opt < argv.index("/opt/py/3.11")
    assert argv[argv.index("--chdir") + 1] == WORKSPACE
    assert "--clearenv" in argv
    assert dict(_pairs(argv, "--setenv")) == {"HOME": WORKSPACE, "LANG": "C.UTF-8"}
    tmpfs = [argv[i + 1] for i, a in enumerate(argv) if a == "--tmpfs"]
    assert tmpfs == ["/tmp", "/dev/shm"]


def test_an_interpreter_under_usr_needs_no_extra_bind() -> None:
    layout = _layout(False, prefix=Path("/usr"))
    assert layout.prefix is None
    assert Path("/usr") in layout.visible


def test_uid_pool_shares_a_workspace_uid_and_never_across_workspaces(tmp_path: Path) -> None:
    pool = UidPool(1000, 2, tmp_path / "locks")
    pool.open()
    a, b = Path("/w/a"), Path("/w/b")
    first = pool.acquire(a)
    assert pool.acquire(a) == first
    second = pool.acquire(b)
    assert second != first and {first, second} == {1000, 1001}
    with pytest.raises(RuntimeError):
        pool.acquire(Path("/w/c"))
    assert pool.release(a) is None  # another call of `a` still runs
    assert pool.release(a) == first
    with pytest.raises(RuntimeError):
        pool.acquire(Path("/w/c"))  # not free until its leftovers are ended
    pool.free(first)
    assert pool.acquire(Path("/w/c")) == first
    assert pool.used == {1000, 1001}


def test_uid_pools_of_two_processes_never_share_a_uid(tmp_path: Path) -> None:
    # Two platform processes on one machine: the file locks keep their uids apart.
    ours, theirs = UidPool(1000, 3, tmp_path), UidPool(1000, 3, tmp_path)
    ours.open()
    theirs.open()
    mine = {ours.acquire(Path(f"/w/{i}")) for i in range(2)}
    assert theirs.acquire(Path("/w/x")) not in mine
    with pytest.raises(RuntimeError, match="in use on this machine"):
        theirs.acquire(Path("/w/y"))
    released = ours.release(Path("/w/0"))
    assert released is not None
    ours.free(released)
    assert theirs.acquire(Path("/w/y")) == released


def test_uid_lock_dir_must_be_private(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError):
        UidPool(1000, 1, shared).open()
    (tmp_path / "link").symlink_to(tmp_path / "locks-elsewhere", target_is_directory=True)
    (tmp_path / "locks-elsewhere").mkdir(mode=0o700)
    with pytest.raises(PermissionError):
        UidPool(1000, 1, tmp_path / "link").open()


def test_workspace_usage_counts_regular_files(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 100)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"x" * 50)
    (tmp_path / "link").symlink_to("/usr/bin/env")
    assert prepare_workspace(tmp_path, 1000, None) == 150
    with pytest.raises(WorkspaceRefused, match="over its quota"):
        prepare_workspace(tmp_path, 149, None)


def test_workspace_is_handed_to_the_call_uid_without_following_links(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "changing owners needs root (the tests run as root, like CI)"
    outside = tmp_path / "outside.txt"
    outside.write_text("platform's")
    workspace = tmp_path / "ws"
    (workspace / "sub").mkdir(parents=True)
    (workspace / "sub" / "f").write_text("x")
    (workspace / "link").symlink_to(outside)
    os.link(outside, workspace / "hardlink")
    prepare_workspace(workspace, 1 << 20, 4242)
    assert workspace.stat().st_uid == 4242
    assert (workspace / "sub").stat().st_uid == 4242
    assert (workspace / "sub" / "f").stat().st_uid == 4242
    assert (workspace / "link").lstat().st_uid == 4242
    # Neither the link's target nor a file with a second name elsewhere changes hands.
    assert outside.stat().st_uid == 0


def test_a_workspace_nested_too_deep_is_refused(tmp_path: Path) -> None:
    path = tmp_path
    for _ in range(MAX_DEPTH + 1):
        path = path / "d"
    path.mkdir(parents=True)
    with pytest.raises(WorkspaceRefused, match="deeper than"):
        prepare_workspace(tmp_path, 1 << 20, None)


def _result(
    returncode: int | None, stderr: bytes = b"", stopped: runner.Stop | None = None
) -> RunResult:
    return RunResult(returncode, b"", stderr, stopped, len(stderr), 0.01)


def test_exit_signals_under_bwrap_and_directly() -> None:
    assert exit_signal(-9, bwrap=False) == 9
    assert exit_signal(137, bwrap=True) == 9
    assert exit_signal(137, bwrap=False) is None
    assert exit_signal(1, bwrap=True) is None


@pytest.mark.parametrize(
    ("result", "bwrap", "why"),
    [
        (_result(0), True, None),
        (_result(2), True, None),
        (_result(-9, stopped="timeout"), False, "timeout"),
        (_result(-9, stopped="output_limit"), False, "output_limit"),
        (_result(128 + signal.SIGXCPU), True, "cpu_limit"),
        (_result(-signal.SIGXFSZ), False, "file_size"),
        (_result(1, b"Traceback...\nMemoryError\n"), True, "memory"),
        (_result(1, b"OSError: [Errno 27] File too large\n"), True, "file_size"),
        (_result(128 + signal.SIGKILL), True, "killed"),
    ],
)
def test_classify(result: RunResult, bwrap: bool, why: str | None) -> None:
    assert classify(result, bwrap=bwrap) == why


def test_outcome_texts() -> None:
    ok = to_outcome(
        RunResult(0, b"hi\n", b"", None, 3, 0.01),
        isolation="bubblewrap",
        limits=LIMITS,
        timeout_s=5,
        max_output=100,
    )
    assert (ok.status, ok.output, ok.detail["exit_code"]) == ("ok", "hi\n", 0)
    capped = to_outcome(
        RunResult(-9, b"x" * 100, b"", "output_limit", 5000, 0.2),
        isolation="rlimits",
        limits=LIMITS,
        timeout_s=5,
        max_output=100,
    )
    assert capped.status == "error"
    assert capped.output.startswith("stopped: output passed 100 bytes")
    assert capped.detail["output_truncated"] is True and capped.detail["signal"] == 9


def test_probe_verdicts() -> None:
    expect = ProbeExpectations(LIMITS, range(2000, 2001), isolated=True)
    good = {
        "uid": 2000,
        "euid": 2000,
        "groups": [],
        "nproc": 8,
        "as": 256 << 20,
        "no_new_privs": "1",
        "cap_eff": 0,
        "loopback": "ConnectionRefusedError",
        "seen": [],
        "userns": 1,
    }

    def report(**changes: object) -> str:
        return "noise\nSOMA-PROBE " + json.dumps(good | changes) + "\n"

    assert verdict(report(), expect) is None
    assert verdict("nothing", expect) == "the probe printed no report"
    assert verdict(report(uid=0, euid=0), expect) == "the probe ran as root"
    assert "not one of" in (verdict(report(uid=2001, euid=2001), expect) or "")
    assert "capabilities" in (verdict(report(cap_eff=1), expect) or "")
    assert "rlimits" in (verdict(report(nproc=-1), expect) or "")
    assert "loopback" in (verdict(report(loopback="connected"), expect) or "")
    assert "/data" in (verdict(report(seen=["/data"]), expect) or "")
    assert "user namespace" in (verdict(report(userns="created"), expect) or "")
    unisolated = ProbeExpectations(LIMITS, None, isolated=False)
    assert verdict(report(loopback="connected", uid=5, euid=5), unisolated) is None


def test_settings_refuse_unsafe_limits() -> None:
    with pytest.raises(ValidationError):
        SandboxSettings(max_processes=1)
    with pytest.raises(ValidationError):
        SandboxSettings(isolation="none")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        SandboxSettings(memory_bytes=1024)


async def _run(argv: list[str], **kwargs: object) -> RunResult:
    options: dict[str, object] = {
        "stdin": None,
        "env": {"PATH": "/usr/bin:/bin"},
        "cwd": Path("/"),
        "timeout_s": 10.0,
        "max_output_bytes": 1 << 16,
    }
    options.update(kwargs)
    return await runner.run(argv, **options)  # type: ignore[arg-type]


async def test_runner_feeds_stdin_and_collects_both_streams() -> None:
    code = "import sys; data = sys.stdin.read(); print(data.upper()); print('e', file=sys.stderr)"
    result = await _run([sys.executable, "-c", code], stdin=b"hello")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"HELLO\n", b"e\n")
    assert result.stopped is None


async def test_runner_cuts_output_and_kills_the_writer() -> None:
    result = await _run(["/bin/sh", "-c", "yes"], max_output_bytes=10_000)
    assert result.stopped == "output_limit"
    assert len(result.stdout) == 10_000
    assert result.returncode == -signal.SIGKILL


async def test_runner_kills_the_process_group_at_the_deadline(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    result = await _run(["/bin/sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], timeout_s=0.5)
    assert result.stopped == "timeout"
    child = int(pid_file.read_text())
    await _gone(child)


async def test_runner_cancelled_kills_the_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    task = asyncio.create_task(
        _run(["/bin/sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], timeout_s=60)
    )
    while not pid_file.exists() or not pid_file.read_text().strip():
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _gone(int(pid_file.read_text()))


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return None


async def _gone(pid: int) -> None:
    """The process is dead: killed, and reaped or a zombie of an exited shell."""
    for _ in range(500):
        if _state(pid) in (None, "Z", "X"):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"process {pid} is still running")


def _evaluate(program: bytes, nr: int, arch: int, arg0: int = 0) -> int:
    """A classic BPF interpreter, just enough for the filter: what it returns for a call."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    code = [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]
    acc, pc = 0, 0
    while True:
        op, jt, jf, k = code[pc]
        if op == 0x20:
            acc = struct.unpack_from("<I", data, k)[0]
        elif op in (0x15, 0x35, 0x45):
            hit = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[op]
            pc += jt if hit else jf
        elif op == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")
        pc += 1


@pytest.mark.parametrize(
    ("machine", "arch", "numbers"),
    [
        ("x86_64", 0xC000003E, {"read": 0, "clone": 56, "clone3": 435, "unshare": 272}),
        ("aarch64", 0xC00000B7, {"read": 63, "clone": 220, "clone3": 435, "unshare": 97}),
    ],
)
def test_seccomp_filter_decisions(machine: str, arch: int, numbers: dict[str, int]) -> None:
    program = seccomp.filter_program(machine)
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    assert _evaluate(program, numbers["read"], arch) == allow
    assert _evaluate(program, numbers["clone"], arch, arg0=0x11) == allow  # fork: SIGCHLD
    assert _evaluate(program, numbers["clone"], arch, arg0=0x3D0F00) == allow  # a thread
    assert _evaluate(program, numbers["clone"], arch, arg0=0x10000011) == eperm  # NEWUSER
    assert _evaluate(program, numbers["clone"], arch, arg0=0x40000011) == eperm  # NEWNET
    assert _evaluate(program, numbers["clone3"], arch) == enosys
    assert _evaluate(program, numbers["unshare"], arch) == eperm
    assert _evaluate(program, numbers["read"], 0x40000003) == enosys  # another ABI (i386)
    if machine == "x86_64":
        assert _evaluate(program, 0x40000000 | numbers["read"], arch) == enosys  # x32


def test_seccomp_refuses_an_unknown_machine() -> None:
    assert not seccomp.supported("riscv64")
    with pytest.raises(ValueError):
        seccomp.filter_program("riscv64")
