"""Per-session private directories under the data dir, and paths resolved safely inside them."""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
"""Tenant and session ids as path components: no separators, no dots, never `..`."""


class WorkspaceError(ValueError):
    """A path a tool asked for that the workspace refuses; the message is safe to show."""


class Workspaces:
    """`<root>/<tenant>/<session>`: one private directory per session, separate per tenant."""

    def __init__(self, root: Path, quota_bytes: int) -> None:
        if quota_bytes < 1:
            raise ValueError("quota_bytes must be positive")
        self._root = Path(root)
        self.quota_bytes = quota_bytes

    @property
    def root(self) -> Path:
        return self._root

    def path_for(self, tenant_id: str, session_id: str) -> Path:
        """Where a session's workspace lives (not created)."""
        return self._root / _checked_id(tenant_id, "tenant") / _checked_id(session_id, "session")

    def for_session(self, tenant_id: str, session_id: str) -> Path:
        """The session's workspace, created (mode 0700) if missing."""
        path = self.path_for(tenant_id, session_id)
        # Only the platform's own user may enter: other local users never see tenant files.
        self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode):
            raise WorkspaceError("the session workspace is not a directory")
        return path

    def discard(self, tenant_id: str, session_id: str) -> None:
        """Delete a session's workspace and everything in it (links are removed, not followed)."""
        path = self.path_for(tenant_id, session_id)
        if path.is_symlink():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)

    def resolve(self, workspace: Path, relative: str) -> Path:
        """The real path of `relative` inside `workspace`; `WorkspaceError` if it could leave it.

        Refused: absolute paths, any `..` component, NUL bytes, and any symlink (at any
        component) whose target lies outside the workspace. The result has no symlinks left.
        """
        base = self._workspace_root(workspace)
        parts = split_relative(relative)
        if not parts:
            return base
        real = Path(os.path.realpath(base.joinpath(*parts)))
        if real != base and base not in real.parents:
            raise WorkspaceError(f"{relative!r} leads outside the workspace (through a symlink)")
        return real

    def usage(self, workspace: Path) -> int:
        """Bytes held by the regular files in `workspace` (apparent size; links not followed)."""
        total = 0
        stack = [str(self._workspace_root(workspace))]
        while stack:
            try:
                entries = os.scandir(stack.pop())
            except (FileNotFoundError, NotADirectoryError):
                continue
            with entries:
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISDIR(info.st_mode):
                        stack.append(entry.path)
                    elif stat.S_ISREG(info.st_mode):
                        total += info.st_size
        return total

    def _workspace_root(self, workspace: Path) -> Path:
        # A workspace is exactly <root>/<tenant>/<session>: anything else is a caller's bug.
        real = Path(os.path.realpath(workspace))
        root = Path(os.path.realpath(self._root))
        if real.parent.parent != root or not real.is_dir():
            raise WorkspaceError("not a session workspace")
        return real


def split_relative(relative: str) -> list[str]:
    """The components of a workspace-relative path; `WorkspaceError` for unsafe forms."""
    if not isinstance(relative, str):
        raise WorkspaceError("a path must be a string")
    if "\x00" in relative:
        raise WorkspaceError("a path must not contain NUL bytes")
    if relative.startswith("/"):
        raise WorkspaceError(f"{relative!r} is absolute: paths are relative to the workspace")
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise WorkspaceError(f"{relative!r} contains '..': paths must stay inside the workspace")
    return parts


def _checked_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise WorkspaceError(f"invalid {what} id for a workspace")
    return value
