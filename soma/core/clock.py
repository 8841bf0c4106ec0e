"""Wall-clock time in one place so tests and storage agree on the format."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
