"""What a finished sandboxed run tells the model: output on success, what stopped it otherwise."""

from __future__ import annotations

import re
import signal
from typing import Any

from soma.tools.port import ToolOutcome
from soma.tools.sandbox.limits import Limits
from soma.tools.sandbox.runner import RunResult

_MEMORY = re.compile(rb"MemoryError|Cannot allocate memory|std::bad_alloc|[Oo]ut of memory")
_FILE_SIZE = re.compile(rb"File too large")
_TAIL = 4096


def exit_signal(returncode: int | None, *, bwrap: bool) -> int | None:
    """The signal that ended the program, if one did."""
    if returncode is None:
        return None
    if returncode < 0:
        return -returncode
    # bwrap reports a program killed by signal N as exit status 128 + N, like a shell.
    if bwrap and 128 < returncode < 128 + 65:
        return returncode - 128
    return None


def classify(result: RunResult, *, bwrap: bool) -> str | None:
    """Why the run did not end normally: timeout, output_limit, cpu_limit, memory, file_size,
    killed; None when the program exited by itself."""
    if result.stopped is not None:
        return result.stopped
    sig = exit_signal(result.returncode, bwrap=bwrap)
    if sig == signal.SIGXCPU:
        return "cpu_limit"
    if sig == signal.SIGXFSZ:
        return "file_size"
    tail = result.stderr[-_TAIL:]
    if result.returncode != 0 and _MEMORY.search(tail):
        return "memory"
    if result.returncode != 0 and _FILE_SIZE.search(tail):
        return "file_size"
    if sig is not None:
        # RLIMIT_CPU's hard limit ends a program that ignored SIGXCPU with SIGKILL.
        return "killed"
    return None


def to_outcome(
    result: RunResult, *, isolation: str, limits: Limits, timeout_s: float, max_output: int
) -> ToolOutcome:
    bwrap = isolation == "bubblewrap"
    stopped = classify(result, bwrap=bwrap)
    sig = exit_signal(result.returncode, bwrap=bwrap)
    stdout = result.stdout.decode("utf-8", errors="replace")
    stderr = result.stderr.decode("utf-8", errors="replace")
    detail: dict[str, Any] = {
        "isolation": isolation,
        "exit_code": result.returncode,
        "signal": sig,
        "stopped": stopped,
        "duration_ms": round(result.duration_s * 1000, 1),
        "output_bytes": result.output_bytes,
        "output_truncated": result.output_bytes > max_output,
    }
    if result.returncode == 0 and stopped is None:
        text = stdout if not stderr else f"{stdout}\n[stderr]\n{stderr}"
        return ToolOutcome.ok(text, **detail)
    lines = [_headline(result, stopped, sig, limits, timeout_s, max_output)]
    if stdout:
        lines.append(f"[stdout]\n{stdout}")
    if stderr:
        lines.append(f"[stderr]\n{stderr}")
    return ToolOutcome.error("\n".join(lines), **detail)


def _headline(
    result: RunResult,
    stopped: str | None,
    sig: int | None,
    limits: Limits,
    timeout_s: float,
    max_output: int,
) -> str:
    if stopped == "timeout":
        return f"stopped: timed out after {timeout_s:g} s (all its processes were killed)"
    if stopped == "output_limit":
        return (
            f"stopped: output passed {max_output} bytes (the program was killed; "
            "the first part is below)"
        )
    if stopped == "cpu_limit":
        return f"stopped: CPU time limit of {limits.cpu_s} s reached"
    if stopped == "memory":
        return f"failed: out of memory (each process may map {limits.memory_bytes} bytes)"
    if stopped == "file_size":
        return f"failed: file size limit of {limits.file_bytes} bytes reached"
    if stopped == "killed" and sig is not None:
        return f"stopped: killed by signal {_signal_name(sig)}"
    return f"failed: exit code {result.returncode}"


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)
