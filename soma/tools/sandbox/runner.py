"""One child process supervised without blocking the loop: output read as it comes and capped,
a wall-clock deadline, and the whole process group killed on any way out."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Stop = Literal["timeout", "output_limit"]

_CHUNK = 65_536
_DRAIN_S = 1.0
"""After the child is gone, how long a descendant that kept a pipe open may delay the result."""


@dataclass(frozen=True, slots=True)
class RunResult:
    returncode: int | None
    """The child's exit status (negative: the signal that ended it); None if it was not reaped."""
    stdout: bytes
    stderr: bytes
    stopped: Stop | None
    """Why the supervisor killed the child, if it did."""
    output_bytes: int
    """Everything the child wrote, including what went past the cap and was dropped."""
    duration_s: float


class _Output:
    """stdout and stderr kept up to a shared cap; `capped` is set the moment it is passed."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.kept = 0
        self.total = 0
        self.capped = asyncio.Event()
        self.streams: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}

    def add(self, name: str, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.cap - self.kept
        if room > 0:
            piece = chunk[:room]
            self.streams[name] += piece
            self.kept += len(piece)
        if self.total > self.cap:
            self.capped.set()


async def run(
    argv: Sequence[str],
    *,
    stdin: bytes | None,
    env: dict[str, str],
    cwd: Path,
    timeout_s: float,
    max_output_bytes: int,
    pass_fds: Sequence[int] = (),
) -> RunResult:
    """Run `argv` as the leader of a new session, killing its process group at the end."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,
        pass_fds=pass_fds,
    )
    output = _Output(max_output_bytes)
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        asyncio.create_task(_read(proc.stdout, "stdout", output)),
        asyncio.create_task(_read(proc.stderr, "stderr", output)),
    ]
    stopped: Stop | None = None
    try:
        try:
            async with asyncio.timeout(timeout_s):
                if stdin is not None:
                    await _feed(proc, stdin)
                capped = asyncio.create_task(output.capped.wait())
                exited = asyncio.create_task(proc.wait())
                try:
                    await asyncio.wait({capped, exited}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    capped.cancel()
                    exited.cancel()
                if output.capped.is_set():
                    stopped = "output_limit"
        except TimeoutError:
            stopped = "timeout"
        _kill_group(proc.pid)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN_S):
                await proc.wait()
                await asyncio.gather(*readers)
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        # Reap it before giving up the loop's attention (a second cancel stops the wait only).
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), _DRAIN_S)
        raise
    finally:
        for reader in readers:
            reader.cancel()
    if output.capped.is_set() and stopped is None:
        stopped = "output_limit"
    return RunResult(
        returncode=proc.returncode,
        stdout=bytes(output.streams["stdout"]),
        stderr=bytes(output.streams["stderr"]),
        stopped=stopped,
        output_bytes=output.total,
        duration_s=time.monotonic() - started,
    )


async def _read(stream: asyncio.StreamReader, name: str, output: _Output) -> None:
    while chunk := await stream.read(_CHUNK):
        output.add(name, chunk)


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    # A child that exits (or fails to start) before reading all of its input is not an error here.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(data)
        await proc.stdin.drain()
    proc.stdin.close()


def _kill_group(pid: int) -> None:
    # The child leads its own session: its group holds everything it did not move elsewhere
    # (under bubblewrap, killing bwrap also ends the sandbox's pid namespace).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
