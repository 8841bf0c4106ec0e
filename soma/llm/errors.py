"""Errors of the LLM layer; the router decides fallbacks from their class."""

from __future__ import annotations

from collections.abc import Sequence

from soma.core.errors import SomaError


class LLMError(SomaError):
    """Base of every LLM failure."""


class ProviderUnavailableError(LLMError):
    """The backend could not serve the request (connection, timeout, 429, 5xx): a fallback may."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s
        """The upstream's `Retry-After`, when it sent one."""


class ProviderTimeoutError(ProviderUnavailableError):
    """No answer (or no next chunk) within the model's `timeout_s`."""


class CircuitOpenError(ProviderUnavailableError):
    """The model's circuit breaker is open: failing fast without calling the backend."""


class ProviderRequestError(LLMError):
    """The backend rejected the request itself (4xx other than 429): no retry, no fallback."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StreamInterruptedError(LLMError):
    """The stream failed after output was delivered; never retried (the text is already out)."""


class UnknownModelError(LLMError):
    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown model {name!r}; known models: {', '.join(sorted(known))}")
        self.name = name


class AllModelsFailedError(ProviderUnavailableError):
    """Every model of the chain (the model and its fallbacks) failed before the first chunk."""

    def __init__(self, model: str, failures: Sequence[tuple[str, str]]) -> None:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in failures)
        super().__init__(f"model {model!r} and its fallbacks failed: {reasons}")
        self.failures = list(failures)


class UpstreamOutageError(ProviderUnavailableError):
    """The chain stayed unavailable for the whole retry window; says why without addresses."""

    def __init__(
        self, model: str, failures: Sequence[tuple[str, str]], window_s: float, reason: str
    ) -> None:
        super().__init__(
            f"the model upstream is unavailable: model {model!r} did not answer within the"
            f" retry window of {window_s:g}s (last failure: {reason})"
        )
        self.failures = list(failures)
        self.window_s = window_s
        self.reason = reason


def public_error(exc: BaseException) -> str:
    """What a tenant may read about a failed model call: the kind of failure, never an address,
    a host or an upstream's own words (those stay in the operator's log)."""
    if isinstance(exc, ProviderRequestError):
        status = f" (HTTP {exc.status})" if exc.status is not None else ""
        return f"the model upstream rejected the request{status}"
    if isinstance(exc, StreamInterruptedError):
        return "the model upstream stopped answering in the middle of the reply"
    if isinstance(exc, ProviderTimeoutError):
        return "the model upstream is unavailable: it did not answer in time"
    if isinstance(exc, ProviderUnavailableError):
        return "the model upstream is unavailable"
    if isinstance(exc, UnknownModelError):
        return f"the agent's model {exc.name!r} is not configured"
    if isinstance(exc, LLMError):
        return "the model could not answer"
    return "the run failed because of an internal error"
