"""Before a call: measure the workspace against its quota and hand it to the call's uid."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

MAX_DEPTH = 128
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class WorkspaceRefused(Exception):
    """The workspace cannot be used for a call; the message is for the model."""


def resolve_workspace(workspace: Path) -> Path:
    """The real path of a call's workspace, which its caller created."""
    real = Path(os.path.realpath(workspace))
    if not real.is_dir():
        raise RuntimeError(f"the call's workspace {workspace} does not exist")
    return real


def prepare_workspace(workspace: Path, quota_bytes: int, owner: int | None) -> int:
    """Bytes the regular files of `workspace` hold (apparent size); refused once past quota.

    With `owner`, every entry becomes that uid's so the call may change what earlier calls, or
    the `files` tool, left there. The walk goes by directory descriptors and never follows a
    link, so a concurrent rename cannot steer it outside; a regular file with more than one
    name keeps its owner (it could be a hard link to a file elsewhere).
    """
    fd = os.open(workspace, _DIR_FLAGS)
    try:
        if owner is not None:
            _own_dir(fd, owner)
        used = _walk(fd, quota_bytes, owner, 0, 0)
    finally:
        os.close(fd)
    return used


def _walk(fd: int, quota: int, owner: int | None, used: int, depth: int) -> int:
    if depth >= MAX_DEPTH:
        raise WorkspaceRefused(f"the workspace nests folders deeper than {MAX_DEPTH} levels")
    subdirs: list[str] = []
    with os.scandir(fd) as entries:
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(info.st_mode):
                subdirs.append(entry.name)
                continue
            if stat.S_ISREG(info.st_mode):
                used += info.st_size
                if used > quota:
                    raise WorkspaceRefused(
                        f"the workspace is over its quota ({used} of {quota} bytes counted); "
                        "delete files before running code"
                    )
                if info.st_nlink > 1:
                    continue
            if owner is not None and (info.st_uid, info.st_gid) != (owner, owner):
                with contextlib.suppress(FileNotFoundError):
                    os.chown(entry.name, owner, owner, dir_fd=fd, follow_symlinks=False)
    for name in subdirs:
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            # Gone, or swapped for a link since it was listed: nothing of the workspace's.
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                continue
            raise
        try:
            if owner is not None:
                _own_dir(child, owner)
            used = _walk(child, quota, owner, used, depth + 1)
        finally:
            os.close(child)
    return used


def _own_dir(fd: int, owner: int) -> None:
    info = os.fstat(fd)
    if (info.st_uid, info.st_gid) != (owner, owner):
        os.fchown(fd, owner, owner)
