"""The bubblewrap command line: new namespaces, a minimal read-only system, the workspace rw."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WORKSPACE = "/workspace"
"""Where the session's workspace appears inside (its host path, in the data dir, stays hidden)."""

_TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
"""On merged-/usr systems these are symlinks into /usr; elsewhere real directories."""
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime")
"""The pieces of /etc programs need to start; passwd and group are the sandbox's own."""


@dataclass(frozen=True, slots=True)
class Layout:
    """What the sandbox sees, fixed at start; `argv` adds the per-call parts."""

    bwrap: Path
    system_binds: tuple[Path, ...]
    """Host paths bound read-only at the same place: /usr, top-level dirs, /etc pieces."""
    symlinks: tuple[tuple[str, str], ...]
    prefix: Path | None
    """The interpreter's install when outside the system binds (bound read-only, same path)."""
    etc_files: tuple[tuple[Path, str], ...]
    """Files of the sandbox's own (passwd, group) bound read-only at these paths."""
    tmp_bytes: int
    user_namespace: bool
    """Unprivileged platform: bwrap makes a user namespace. Root: the call drops to its own uid
    instead (a user namespace would map it back to uid 0, which RLIMIT_NPROC does not bind)."""

    @classmethod
    def build(
        cls,
        *,
        bwrap: Path,
        interpreter_prefix: Path,
        etc_files: Sequence[tuple[Path, str]],
        tmp_bytes: int,
        user_namespace: bool,
    ) -> Layout:
        binds: list[Path] = [Path("/usr")]
        symlinks: list[tuple[str, str]] = []
        for name in _TOP_LEVEL:
            host = Path("/") / name
            if host.is_symlink():
                symlinks.append((os.readlink(host), str(host)))
            elif host.is_dir():
                binds.append(host)
        binds.extend(Path("/etc") / name for name in _ETC if (Path("/etc") / name).exists())
        covered = any(b == interpreter_prefix or b in interpreter_prefix.parents for b in binds)
        return cls(
            bwrap=bwrap,
            system_binds=tuple(binds),
            symlinks=tuple(symlinks),
            prefix=None if covered else interpreter_prefix,
            etc_files=tuple(etc_files),
            tmp_bytes=tmp_bytes,
            user_namespace=user_namespace,
        )

    @property
    def visible(self) -> tuple[Path, ...]:
        """Every host path the sandbox can read (the workspace aside)."""
        return (*self.system_binds, *(() if self.prefix is None else (self.prefix,)))

    def argv(
        self, workspace: Path, env: dict[str, str], seccomp_fd: int | None = None
    ) -> list[str]:
        """bwrap and its options up to `--`; the program (after setpriv, prlimit) follows.
        `seccomp_fd` is an open descriptor of a compiled filter (see `seccomp`)."""
        if self.user_namespace:
            namespaces = ["--unshare-all", "--unshare-user", "--disable-userns"]
        else:
            # --unshare-all minus the user namespace (see `user_namespace`).
            namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
            namespaces.append("--unshare-cgroup-try")
        argv = [str(self.bwrap), *namespaces, "--die-with-parent", "--new-session"]
        # bwrap gives a directory it creates the mode of the source's parent: set it instead.
        argv += ["--hostname", "sandbox", "--perms", "0755", "--dir", "/etc"]
        for bind in self.system_binds:
            argv += ["--ro-bind", str(bind), str(bind)]
        for target, link in self.symlinks:
            argv += ["--symlink", target, link]
        if self.prefix is not None:
            # bwrap would copy the host parents' modes (/root: 0700), which the uid cannot pass.
            for parent in reversed(self.prefix.parents[:-1]):
                argv += ["--perms", "0755", "--dir", str(parent)]
            argv += ["--ro-bind", str(self.prefix), str(self.prefix)]
        for source, dest in self.etc_files:
            argv += ["--ro-bind", str(source), dest]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        for tmpfs in ("/tmp", "/dev/shm"):
            argv += ["--perms", "1777", "--size", str(self.tmp_bytes), "--tmpfs", tmpfs]
        argv += ["--bind", str(workspace), WORKSPACE, "--chdir", WORKSPACE, "--clearenv"]
        for key, value in env.items():
            argv += ["--setenv", key, value]
        if seccomp_fd is not None:
            argv += ["--seccomp", str(seccomp_fd)]
        argv.append("--")
        return argv
