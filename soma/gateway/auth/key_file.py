"""The bootstrap key file: written once, atomically, mode 0600, never overwritten."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_key_file(path: Path, key: str) -> None:
    """Write `key` alone on one line; FileExistsError when `path` already exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # mkstemp creates the file 0600 whatever the umask, so the key is never readable by others.
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        # A hard link publishes the complete file atomically and, unlike rename, refuses to
        # replace an existing one.
        os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)
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
