"""Time-ordered identifiers: sortable like their creation time, unique across replicas."""

from __future__ import annotations

import os
import socket
import time


def new_id() -> str:
    """A UUIDv7-layout id as 32 hex characters (48-bit ms timestamp, 74 random bits)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return f"{value:032x}"  # as uuid.UUID(int=value).hex, without building the UUID


def worker_id() -> str:
    """Names this process as a lease owner: readable in the runs table, unique per start."""
    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:]}"
