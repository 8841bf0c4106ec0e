"""Which uid a call runs as when the platform is root: one per busy workspace, never shared."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path


class UidPool:
    """Calls in the same workspace share its uid; workspaces in use never share one.

    RLIMIT_NPROC counts every process of a uid, so a uid per busy workspace makes the process
    limit per call group, and one call's fork bomb cannot starve another session's calls.
    Platform processes of one machine take uids by `flock` on a file per uid, so none hands
    out, or sweeps with kill -1, a uid another is using; the kernel drops a dead one's locks.
    """

    def __init__(self, base: int, count: int, lock_dir: Path) -> None:
        self.range = range(base, base + count)
        self.used: set[int] = set()
        """Every uid this pool has handed out."""
        self._lock_dir = lock_dir
        self._leases: dict[Path, tuple[int, int]] = {}
        self._locks: dict[int, int] = {}
        self._next = 0

    def open(self) -> None:
        """Create the lock directory, or check it is this user's own and not a link."""
        self._lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(self._lock_dir)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
            raise PermissionError(f"{self._lock_dir} must be a directory only this user writes")

    def acquire(self, workspace: Path) -> int:
        uid, users = self._leases.get(workspace, (None, 0))
        if uid is None:
            uid = self._lock_one()
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
        os.close(self._locks.pop(uid))  # closing the file drops its lock

    def _lock_one(self) -> int:
        size = len(self.range)
        for step in range(size):
            index = (self._next + step) % size
            uid = self.range[index]
            if uid in self._locks:
                continue
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(self._lock_dir / str(uid), flags, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._locks[uid] = fd
            self._next = (index + 1) % size
            self.used.add(uid)
            return uid
        raise RuntimeError(f"all {size} sandbox uids are in use on this machine")
