"""The resource limits of one sandboxed call, applied by util-linux `prlimit` before the program."""

from __future__ import annotations

from dataclasses import dataclass

from soma.config.tools import SandboxSettings

PRLIMIT = "/usr/bin/prlimit"
SETPRIV = "/usr/bin/setpriv"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-process rlimits (the process count is per call: see `uids`)."""

    cpu_s: int
    memory_bytes: int
    file_bytes: int
    processes: int
    open_files: int

    @classmethod
    def from_settings(cls, settings: SandboxSettings) -> Limits:
        return cls(
            cpu_s=settings.cpu_s,
            memory_bytes=settings.memory_bytes,
            file_bytes=settings.max_file_bytes,
            processes=settings.max_processes,
            open_files=settings.max_open_files,
        )

    def prlimit_argv(self) -> list[str]:
        """`prlimit` sets these on itself, then execs the program that follows `--`."""
        return [
            PRLIMIT,
            # The soft CPU limit sends SIGXCPU; the hard one a second later SIGKILL.
            f"--cpu={self.cpu_s}:{self.cpu_s + 1}",
            f"--as={self.memory_bytes}",
            f"--fsize={self.file_bytes}",
            f"--nproc={self.processes}",
            f"--nofile={self.open_files}",
            "--core=0",
            "--",
        ]

    def as_dict(self) -> dict[str, int]:
        return {
            "cpu_s": self.cpu_s,
            "memory_bytes": self.memory_bytes,
            "file_bytes": self.file_bytes,
            "processes": self.processes,
            "open_files": self.open_files,
        }


def setpriv_argv(uid: int | None, *, pdeathsig: bool = False) -> list[str]:
    """util-linux `setpriv`: no new privileges; with `uid`, become it with no groups and no
    capabilities; with `pdeathsig`, die with the platform (set after the uid change, which
    would clear it)."""
    argv = [SETPRIV]
    if uid is not None:
        argv += [f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        argv += ["--inh-caps=-all", "--bounding-set=-all"]
    if pdeathsig:
        argv.append("--pdeathsig=KILL")
    return [*argv, "--no-new-privs", "--"]
