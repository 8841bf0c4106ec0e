"""Which uid a call runs as when the platform is root: one per busy workspace, never shared."""

from __future__ import annotations

from pathlib import Path


class UidPool:
    """Calls in the same workspace share its uid; workspaces in use never share one.

    RLIMIT_NPROC counts every process of a uid, so a uid per busy workspace makes the process
    limit per call group, and one call's fork bomb cannot starve another session's calls.
    """

    def __init__(self, base: int, size: int) -> None:
        self._free = list(range(base + size - 1, base - 1, -1))
        self._leases: dict[Path, tuple[int, int]] = {}
        self.range = range(base, base + size)

    def acquire(self, workspace: Path) -> int:
        uid, users = self._leases.get(workspace, (None, 0))
        if uid is None:
            if not self._free:
                # Calls are bounded by a semaphore of the pool's size: this is a bug.
                raise RuntimeError("no sandbox uid free")
            uid = self._free.pop()
        self._leases[workspace] = (uid, users + 1)
        return uid

    def release(self, workspace: Path) -> int | None:
        """The uid, when this was the workspace's last call; give it back with `free` once
        nothing of it runs any more."""
        uid, users = self._leases[workspace]
        if users > 1:
            self._leases[workspace] = (uid, users - 1)
            return None
        del self._leases[workspace]
        return uid

    def free(self, uid: int) -> None:
        self._free.append(uid)
