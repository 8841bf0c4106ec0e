"""Errors shared across the platform."""

from __future__ import annotations


class SomaError(Exception):
    """Base of the platform's own errors."""


class StartupError(SomaError):
    """A service could not start; the message is one line naming the cause."""


class NotFoundError(SomaError):
    """A resource does not exist for this tenant (cross-tenant access looks the same)."""


class ConflictError(SomaError):
    """The request conflicts with the current state of a resource."""


class UnavailableError(SomaError):
    """A backend (database, cache) cannot serve right now; retrying later may succeed."""


class LimitExceededError(SomaError):
    """A rate, in-flight or budget limit says no: 429 with `Retry-After`."""

    def __init__(self, detail: str, retry_after_s: float) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s
