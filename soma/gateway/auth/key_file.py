"""The admin key file: written atomically, mode 0600; only an offline reset replaces it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_key_file(path: Path, key: str) -> None:
    """Write `key` alone on one line; FileExistsError when `path` already exists."""
    staged = stage_key_file(path, key)
    try:
        publish_key_file(staged, path, replace=False)
    finally:
        staged.unlink(missing_ok=True)


def stage_key_file(path: Path, key: str) -> Path:
    """Write `key` (one line, mode 0600, synced) to a new file next to `path`; the caller
    publishes it with `publish_key_file` or deletes it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # mkstemp creates the file 0600 whatever the umask, so the key is never readable by others.
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    staged = Path(temp_name)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return staged


def publish_key_file(staged: Path, path: Path, *, replace: bool) -> None:
    """Make the staged file `path`, atomically; without `replace`, FileExistsError if it exists."""
    if replace:
        os.replace(staged, path)
    else:
        # A hard link publishes the complete file atomically and, unlike rename, refuses to
        # replace an existing one.
        os.link(staged, path)
        staged.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def remove_key_file(path: Path) -> None:
    path.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            # Some filesystems refuse fsync on directories; the data itself is already synced.
            os.fsync(fd)
    finally:
        os.close(fd)
