"""Adapter for any OpenAI-compatible `/chat/completions` endpoint, streamed over SSE.

aiohttp rather than httpx: on this hot path (one streamed request per model call) it costs
about a quarter of the CPU per request (measured 0.18 vs 0.68 ms against a local upstream).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import aiohttp
import orjson

from soma.core.redact import redact_text, redact_url
from soma.llm.accumulate import collect
from soma.llm.errors import (
    ProviderRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    StreamInterruptedError,
)
from soma.llm.openai_wire import ToolNames, decode_chunk, encode_request, error_message
from soma.llm.retry import RetryPolicy, parse_retry_after
from soma.llm.sse import aiter_sse
from soma.llm.types import ChatChunk, ChatRequest, ChatResult

log = logging.getLogger("soma.llm.openai")

_RETRYABLE_STATUS = frozenset({408, 429})
_MAX_CONNECTIONS = 1024
_KEEPALIVE_S = 60.0
_HEALTH_TIMEOUT_S = 5.0
_ERROR_BODY_CHARS = 300


class _RetryableError(Exception):
    """Internal: a failure before the first chunk that another attempt may cure."""

    def __init__(self, error: ProviderUnavailableError, retry_after_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after_s = retry_after_s


class OpenAIProvider:
    """Streams chat completions; retries only while nothing has been delivered yet."""

    kind = "openai"

    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.where = redact_url(self.base_url)
        """The base URL as messages, logs and health show it: without credentials."""
        self.model = model
        self.timeout_s = timeout_s
        self._retry = retry or RetryPolicy(retries=2)
        self._headers = {
            "Accept": "text/event-stream, application/json",
            "Content-Type": "application/json",
        }
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        # Connecting and each read are bounded; a whole stream may take as long as it streams.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout_s, sock_connect=timeout_s, sock_read=timeout_s
        )
        self._client: aiohttp.ClientSession | None = None
        self._chat_url = f"{self.base_url}/chat/completions"
        self._models_url = f"{self.base_url}/models"

    def __repr__(self) -> str:
        return f"OpenAIProvider({self.name!r}, {self.where!r}, model={self.model!r})"

    def describe(self) -> str:
        return f"openai {self.where} model={self.model}"

    async def complete(self, request: ChatRequest) -> ChatResult:
        return await collect(self.stream(request), self.name, self.kind)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatChunk, None]:
        names = ToolNames.of(request)
        body = orjson.dumps(encode_request(self.model, request, stream=True, names=names))
        attempt = 0
        while True:
            attempt += 1
            delivered = False
            try:
                async with aclosing(self._attempt(body, names)) as chunks:
                    async for chunk in chunks:
                        delivered = True
                        yield chunk
                return
            except _RetryableError as failure:
                if delivered:
                    raise StreamInterruptedError(
                        f"{self.name}: stream broke after output: {failure}"
                    ) from failure.error
                delay = self._retry.delay(attempt, failure.retry_after_s)
                if delay is None:
                    raise failure.error from None
                log.warning(
                    "llm upstream failed, retrying",
                    extra={
                        "model": self.name,
                        "base_url": self.where,
                        "attempt": attempt,
                        "error": str(failure.error),
                        "retry_in_s": round(delay, 3),
                    },
                )
                await asyncio.sleep(delay)

    def _session(self) -> aiohttp.ClientSession:
        """Made on first use, inside the event loop that will use it."""
        if self._client is None or self._client.closed:
            connector = aiohttp.TCPConnector(
                limit=_MAX_CONNECTIONS, limit_per_host=0, keepalive_timeout=_KEEPALIVE_S
            )
            self._client = aiohttp.ClientSession(
                connector=connector, headers=self._headers, timeout=self._timeout
            )
        return self._client

    async def _attempt(self, body: bytes, names: ToolNames) -> AsyncGenerator[ChatChunk, None]:
        """One HTTP exchange; failures before the first chunk surface as `_RetryableError`."""
        delivered = False
        finished = False
        try:
            async with self._session().post(self._chat_url, data=body) as response:
                if response.status >= 400:
                    await self._raise_status(response)
                async for event in aiter_sse(_lines(response.content)):
                    if event.data == "[DONE]":
                        finished = True
                        break
                    chunk = self._decode(event.data, names)
                    if chunk is None:
                        continue
                    if chunk.finish_reason is not None:
                        finished = True
                    delivered = True
                    yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            error: ProviderUnavailableError = ProviderTimeoutError(
                f"{self.name}: no answer from {self.where} within {self.timeout_s:g}s"
                f" ({type(exc).__name__})"
            )
            raise self._after(delivered, error) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            error = ProviderUnavailableError(
                f"{self.name}: {self.where} unreachable: {type(exc).__name__}: {_safe(exc)}"
            )
            raise self._after(delivered, error) from exc
        except aiohttp.ClientError as exc:
            error = ProviderUnavailableError(
                f"{self.name}: request to {self.where} failed: {type(exc).__name__}: {_safe(exc)}"
            )
            raise self._after(delivered, error) from exc
        if not finished:
            raise self._after(
                delivered,
                ProviderUnavailableError(f"{self.name}: stream ended without a finish reason"),
            )

    def _after(self, delivered: bool, error: ProviderUnavailableError) -> Exception:
        if delivered:
            return StreamInterruptedError(f"{error} (after output was streamed)")
        return _RetryableError(error)

    def _decode(self, data: str, names: ToolNames) -> ChatChunk | None:
        try:
            payload: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise _RetryableError(
                ProviderUnavailableError(f"{self.name}: malformed stream event {data[:80]!r}")
            ) from None
        message = error_message(payload)
        if message is not None:
            raise _RetryableError(
                ProviderUnavailableError(f"{self.name}: upstream error in stream: {message}")
            )
        return decode_chunk(payload, names) if isinstance(payload, dict) else None

    async def _raise_status(self, response: aiohttp.ClientResponse) -> None:
        status = response.status
        raw = await response.content.read(_ERROR_BODY_CHARS * 4)
        try:
            detail = error_message(orjson.loads(raw)) or raw.decode(errors="replace")
        except orjson.JSONDecodeError:
            detail = raw.decode(errors="replace")
        text = f"{self.name}: HTTP {status} from {self.where}: {detail[:_ERROR_BODY_CHARS]}"
        if status in _RETRYABLE_STATUS or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            error = ProviderUnavailableError(text, status=status, retry_after_s=retry_after)
            raise _RetryableError(error, retry_after)
        raise ProviderRequestError(text, status=status)

    async def check(self) -> str:
        """`GET /models`: the endpoint answers and accepts the key; spends no tokens."""
        timeout = aiohttp.ClientTimeout(total=_HEALTH_TIMEOUT_S)
        try:
            async with self._session().get(self._models_url, timeout=timeout) as response:
                status = response.status
                await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ProviderUnavailableError(
                f"{self.where} unreachable: {type(exc).__name__}: {_safe(exc)}"
            ) from exc
        if status >= 300:
            raise ProviderUnavailableError(
                f"GET {redact_url(self._models_url)} answered {status}", status=status
            )
        return f"reachable ({self.where}, model {self.model})"

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


def _safe(exc: BaseException) -> str:
    # Client errors put the request URL (with any credentials in it) into their messages.
    return redact_text(str(exc))


async def _lines(content: aiohttp.StreamReader) -> AsyncGenerator[str, None]:
    """Lines without terminators, of any length (aiohttp's own line reader stops at 64 KiB)."""
    pending = b""
    async for chunk in content.iter_any():
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.removesuffix(b"\r").decode()
    if pending:
        yield pending.removesuffix(b"\r").decode()
