"""The `files` built-in: read, write, list and delete text files in the session's workspace."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import shutil
import stat
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soma.tools.port import ToolCallContext, ToolOutcome, ToolSpec
from soma.tools.workspace import WorkspaceError, Workspaces

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
MAX_DEPTH = 32
"""Subfolder levels a recursive listing descends."""

SPEC = ToolSpec(
    name="files",
    description=(
        "Read, write, list or delete text files in this conversation's private workspace. "
        "Paths are relative to the workspace ('.' is the workspace itself). "
        "write replaces the whole file (parent folders are created)."
    ),
    parameters={
        "type": "object",
        "properties": {
            "op": {"type": "string", "enum": ["read", "write", "list", "delete"]},
            "path": {
                "type": "string",
                "maxLength": 1024,
                "description": "Relative to the workspace, e.g. 'notes/todo.md' or '.'.",
            },
            "content": {
                "type": "string",
                "description": "write only: the complete new text of the file.",
            },
            "recursive": {
                "type": "boolean",
                "description": "list: include subfolders; delete: a folder with its contents.",
            },
        },
        "required": ["op", "path"],
        "additionalProperties": False,
    },
    # Every operation's effect depends on its arguments alone (write replaces the whole file,
    # deleting what is already gone leaves the same state), so a retry after a crash converges.
    idempotent=True,
)


class FileOpError(Exception):
    """An operation the workspace refuses or cannot do; the message is for the model."""


@dataclass(frozen=True, slots=True)
class FilesLimits:
    max_read_bytes: int = 1024 * 1024
    max_write_bytes: int = 1024 * 1024
    max_entries: int = 1000


class FilesTool:
    """`files`: every path resolved inside the workspace, no symlink followed on the way."""

    def __init__(self, workspaces: Workspaces, limits: FilesLimits | None = None) -> None:
        self._workspaces = workspaces
        self._limits = limits or FilesLimits()
        # Writes and deletes of one workspace take turns, so a quota check sees the others.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def spec(self) -> ToolSpec:
        return SPEC

    async def run(self, args: dict[str, Any], call: ToolCallContext) -> ToolOutcome:
        op = str(args.get("op", ""))
        path = args.get("path", "")
        detail = {"op": op, "path": path}
        try:
            target = self._target(call.workspace, path)
            if op == "read":
                return await asyncio.to_thread(self._read, target, path)
            if op == "list":
                recursive = bool(args.get("recursive", False))
                return await asyncio.to_thread(self._list, target, path, recursive)
            if op not in ("write", "delete"):
                return ToolOutcome.error(f"unknown op {op!r}: use read, write, list or delete")
            lock = self._locks.setdefault(str(call.workspace), asyncio.Lock())
            async with lock:
                if op == "write":
                    content = args.get("content")
                    if not isinstance(content, str):
                        return ToolOutcome.error("write needs 'content' (the text of the file)")
                    return await asyncio.to_thread(self._write, target, path, content)
                recursive = bool(args.get("recursive", False))
                return await asyncio.to_thread(self._delete, target, path, recursive)
        except (WorkspaceError, FileOpError) as exc:
            return ToolOutcome.error(str(exc), **detail)
        except OSError as exc:
            return ToolOutcome.error(_describe(exc, path), **detail)

    def _target(self, workspace: Path, path: Any) -> _Target:
        if not isinstance(path, str):
            raise FileOpError("'path' must be a string")
        root = self._workspaces.resolve(workspace, ".")
        real = self._workspaces.resolve(workspace, path)
        return _Target(root=root, parts=real.relative_to(root).parts)

    def _read(self, target: _Target, path: str) -> ToolOutcome:
        if not target.parts:
            raise FileOpError("'.' is the workspace folder: use op 'list'")
        parent = target.open_parent(create=False)
        try:
            fd = os.open(target.parts[-1], _FILE_FLAGS, dir_fd=parent)
        finally:
            os.close(parent)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if stat.S_ISDIR(info.st_mode):
                raise FileOpError(f"{path} is a folder: use op 'list'")
            if not stat.S_ISREG(info.st_mode):
                raise FileOpError(f"{path} is not a regular file")
            data = handle.read(self._limits.max_read_bytes)
        if b"\x00" in data:
            raise FileOpError(f"{path} is a binary file ({info.st_size} bytes): only text is read")
        text = data.decode("utf-8", errors="replace")
        truncated = info.st_size > len(data)
        if truncated:
            text += f"\n[... truncated: the file has {info.st_size} bytes, shown {len(data)}]"
        return ToolOutcome.ok(text, op="read", path=path, bytes=info.st_size, truncated=truncated)

    def _write(self, target: _Target, path: str, content: str) -> ToolOutcome:
        if not target.parts:
            raise FileOpError("'.' is the workspace folder: name a file to write")
        data = content.encode("utf-8")
        if len(data) > self._limits.max_write_bytes:
            raise FileOpError(
                f"content is {len(data)} bytes: at most {self._limits.max_write_bytes} per write"
            )
        parent = target.open_parent(create=True)
        try:
            name = target.parts[-1]
            existing = _size_of(name, parent)
            if existing is None:
                raise FileOpError(f"{path} is a folder or special file: it cannot be written")
            used = self._workspaces.usage(target.root)
            quota = self._workspaces.quota_bytes
            if used - existing + len(data) > quota:
                raise FileOpError(
                    f"workspace quota exceeded: {used} of {quota} bytes used, "
                    f"writing {len(data)} bytes to {path} would need "
                    f"{used - existing + len(data)}"
                )
            temp = f".{name[:64]}.{secrets.token_hex(6)}.tmp"
            fd = os.open(
                temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=parent
            )
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
            except BaseException:
                _unlink_quietly(temp, parent)
                raise
        finally:
            os.close(parent)
        return ToolOutcome.ok(
            f"wrote {len(data)} bytes to {path}", op="write", path=path, bytes=len(data)
        )

    def _list(self, target: _Target, path: str, recursive: bool) -> ToolOutcome:
        fd = target.open_dir()
        lines: list[str] = []
        complete = _walk(fd, "", MAX_DEPTH if recursive else 0, lines, self._limits.max_entries)
        text = "\n".join(lines) if lines else f"{path or '.'} is empty"
        if not complete:
            limit = self._limits.max_entries
            text += f"\n[... not all shown: at most {limit} entries, {MAX_DEPTH} levels deep]"
        return ToolOutcome.ok(text, op="list", path=path, entries=len(lines), complete=complete)

    def _delete(self, target: _Target, path: str, recursive: bool) -> ToolOutcome:
        if not target.parts:
            raise FileOpError("the workspace folder itself cannot be deleted")
        try:
            parent = target.open_parent(create=False)
        except FileNotFoundError:
            return _absent(path)
        try:
            name = target.parts[-1]
            try:
                info = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                return _absent(path)
            if stat.S_ISDIR(info.st_mode):
                if recursive:
                    shutil.rmtree(name, dir_fd=parent)
                else:
                    try:
                        os.rmdir(name, dir_fd=parent)
                    except OSError as exc:
                        if exc.errno == errno.ENOTEMPTY:
                            raise FileOpError(
                                f"{path} is a folder that is not empty: "
                                "pass recursive: true to delete it with its contents"
                            ) from None
                        raise
            else:
                os.unlink(name, dir_fd=parent)
        finally:
            os.close(parent)
        return ToolOutcome.ok(f"deleted {path}", op="delete", path=path, existed=True)


@dataclass(frozen=True, slots=True)
class _Target:
    """A resolved path as components under the workspace's real directory."""

    root: Path
    parts: tuple[str, ...]

    def open_parent(self, create: bool) -> int:
        """A descriptor of the parent folder, reached without following any symlink."""
        return self._open(self.parts[:-1], create)

    def open_dir(self) -> int:
        return self._open(self.parts, create=False)

    def _open(self, parts: tuple[str, ...], create: bool) -> int:
        # Resolution already refused links out; walking by descriptor with O_NOFOLLOW closes
        # the race where sandboxed code swaps a folder for a link after that check.
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for part in parts:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd


def _walk(fd: int, prefix: str, depth: int, lines: list[str], limit: int) -> bool:
    """Append the entries of folder `fd` (closed here) and, `depth` levels deep, of its
    subfolders; False when the entry limit or the depth left something out."""
    complete = True
    try:
        with os.scandir(fd) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            if len(lines) >= limit:
                return False
            info = entry.stat(follow_symlinks=False)
            name = prefix + entry.name
            if stat.S_ISDIR(info.st_mode):
                lines.append(f"{name}/")
                if depth > 0:
                    child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                    complete = _walk(child, name + "/", depth - 1, lines, limit) and complete
                elif prefix:
                    complete = False  # a recursive listing stopped at MAX_DEPTH
            elif stat.S_ISREG(info.st_mode):
                lines.append(f"{name}  ({info.st_size} bytes)")
            elif stat.S_ISLNK(info.st_mode):
                lines.append(f"{name}  (symbolic link)")
            else:
                lines.append(f"{name}  (special file)")
        return complete
    finally:
        os.close(fd)


def _size_of(name: str, parent: int) -> int | None:
    """Size of an existing regular file (0 if absent); None for a folder or special file."""
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return 0
    if stat.S_ISREG(info.st_mode):
        return info.st_size
    if stat.S_ISLNK(info.st_mode):
        return 0
    return None


def _absent(path: str) -> ToolOutcome:
    return ToolOutcome.ok(
        f"{path} did not exist: nothing deleted", op="delete", path=path, existed=False
    )


def _unlink_quietly(name: str, parent: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=parent)


def _describe(exc: OSError, path: str) -> str:
    """The model's view of a failed file operation: what went wrong, never a host path."""
    reasons = {
        errno.ENOENT: "no such file or folder",
        errno.ENOTDIR: "a part of the path is not a folder",
        errno.ELOOP: "the path goes through a symbolic link (refused)",
        errno.EISDIR: "it is a folder",
        errno.EEXIST: "it already exists",
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.ENAMETOOLONG: "a name in the path is too long",
    }
    return f"{path}: {reasons.get(exc.errno or 0, 'the operation failed')}"
