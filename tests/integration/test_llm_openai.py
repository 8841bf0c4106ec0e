"""The OpenAI-compatible provider against a real HTTP server that scripts its replies."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import pytest

from soma.llm.errors import (
    ProviderRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    StreamInterruptedError,
)
from soma.llm.openai import OpenAIProvider
from soma.llm.retry import RetryPolicy
from soma.llm.types import ChatChunk, ChatMessage, ChatRequest, ToolCall, ToolSpec, Usage
from tests.support.scripted_llm import Hang, HttpError, ScriptedLLM, Text, ToolCalls

pytestmark = pytest.mark.integration

KEY = "sk-test-very-secret-key"
HELLO = ChatRequest(messages=[ChatMessage("user", "hello there friend")])


def make_provider(upstream: ScriptedLLM, retries: int = 2, timeout_s: float = 5) -> OpenAIProvider:
    return OpenAIProvider(
        name="gpt",
        base_url=upstream.base_url,
        model="upstream-model",
        api_key=KEY,
        timeout_s=timeout_s,
        retry=RetryPolicy(retries, base_s=0.01, cap_s=0.05),
    )


@pytest.fixture
async def provider(upstream: ScriptedLLM) -> AsyncIterator[OpenAIProvider]:
    provider = make_provider(upstream)
    yield provider
    await provider.aclose()


async def wait_until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_streams_text_in_chunks_with_usage(
    upstream: ScriptedLLM, provider: OpenAIProvider
) -> None:
    upstream.script(Text("The quick brown fox", chunks=4))
    chunks = [c async for c in provider.stream(HELLO)]
    texts = [c.text for c in chunks if c.text]
    assert len(texts) == 4
    assert "".join(texts) == "The quick brown fox"
    assert chunks[-1].usage == Usage(prompt_tokens=3, completion_tokens=4)
    assert any(c.finish_reason == "stop" for c in chunks)
    (sent,) = upstream.chat_requests()
    assert sent.body["model"] == "upstream-model"
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.headers["authorization"] == f"Bearer {KEY}"


async def test_complete_assembles_the_result(
    upstream: ScriptedLLM, provider: OpenAIProvider
) -> None:
    upstream.script(Text("Fine, thanks.", chunks=2))
    result = await provider.complete(HELLO)
    assert result.content == "Fine, thanks."
    assert (result.finish_reason, result.model, result.provider) == ("stop", "gpt", "openai")
    assert result.usage == Usage(3, 2)


async def test_streams_tool_call_deltas_and_sends_empty_assistant_content(
    upstream: ScriptedLLM, provider: OpenAIProvider
) -> None:
    upstream.script(
        ToolCalls([("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})], fragments=3)
    )
    request = ChatRequest(
        messages=[
            ChatMessage("user", "weather and time?"),
            ChatMessage("assistant", "", tool_calls=(ToolCall("c0", "noop", "{}"),)),
            ChatMessage("tool", "done", tool_call_id="c0"),
        ],
        tools=[ToolSpec("get_weather", "weather"), ToolSpec("get_time", "time")],
    )
    chunks: list[ChatChunk] = [c async for c in provider.stream(request)]
    deltas = [d for c in chunks for d in c.tool_calls]
    assert len([d for d in deltas if d.index == 0]) >= 3
    result = await _collect(chunks)
    assert [c.name for c in result] == ["get_weather", "get_time"]
    assert [json.loads(c.arguments) for c in result] == [{"city": "Paris"}, {"tz": "CET"}]
    assert [c.id for c in result] == ["call_0", "call_1"]
    body = upstream.chat_requests()[0].body
    assert body["messages"][1]["content"] == ""
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather", "get_time"]


async def _collect(chunks: list[ChatChunk]) -> tuple[ToolCall, ...]:
    from soma.llm.accumulate import ResultBuilder

    builder = ResultBuilder()
    for chunk in chunks:
        builder.add(chunk)
    return builder.tool_calls()


async def test_429_is_retried_after_a_small_retry_after(
    upstream: ScriptedLLM, provider: OpenAIProvider
) -> None:
    upstream.script(HttpError(429, retry_after=0.05), Text("after the wait"))
    result = await provider.complete(HELLO)
    assert result.content == "after the wait"
    assert len(upstream.chat_requests()) == 2


async def test_a_long_retry_after_is_not_waited_for(
    upstream: ScriptedLLM, provider: OpenAIProvider
) -> None:
    upstream.script(HttpError(429, retry_after=3600), Text("never"))
    with pytest.raises(ProviderUnavailableError, match="HTTP 429") as caught:
        await provider.complete(HELLO)
    assert caught.value.status == 429
    assert len(upstream.chat_requests()) == 1


async def test_5xx_is_retried_then_reported(
    upstream: ScriptedLLM, provider: OpenAIProvider
) -> None:
    upstream.script(HttpError(500), HttpError(503), HttpError(502, message="still down"))
    with pytest.raises(ProviderUnavailableError, match=r"HTTP 502.*still down"):
        await provider.complete(HELLO)
    assert len(upstream.chat_requests()) == 3


async def test_client_errors_are_neither_retried_nor_unavailability(
    upstream: ScriptedLLM, provider: OpenAIProvider
) -> None:
    upstream.script(HttpError(400, message="bad request body"))
    with pytest.raises(ProviderRequestError, match=r"HTTP 400.*bad request body"):
        await provider.complete(HELLO)
    assert len(upstream.chat_requests()) == 1


async def test_a_silent_upstream_times_out(upstream: ScriptedLLM) -> None:
    upstream.script(Hang(30))
    provider = make_provider(upstream, retries=0, timeout_s=0.3)
    try:
        with pytest.raises(ProviderTimeoutError, match=r"within 0.3s"):
            await provider.complete(HELLO)
    finally:
        await provider.aclose()


async def test_an_error_after_the_first_token_is_raised_not_retried(
    upstream: ScriptedLLM, provider: OpenAIProvider
) -> None:
    upstream.script(Text("abcdefghi", chunks=3, fail_after=1), Text("retry must not happen"))
    received: list[str] = []
    with pytest.raises(StreamInterruptedError):
        async for chunk in provider.stream(HELLO):
            received.append(chunk.text)
    assert received == ["abc"]
    assert len(upstream.chat_requests()) == 1


async def test_connection_refused_is_unavailable_after_retries() -> None:
    server = ScriptedLLM()
    url = server.base_url
    server.stop()  # bound but never served, now closed: nothing listens on the port
    provider = OpenAIProvider("gpt", url, "m", timeout_s=2, retry=RetryPolicy(1, base_s=0.01))
    try:
        with pytest.raises(ProviderUnavailableError, match="unreachable"):
            await provider.complete(HELLO)
        with pytest.raises(ProviderUnavailableError, match="unreachable"):
            await provider.check()
    finally:
        await provider.aclose()


async def test_closing_a_stream_early_disconnects_the_upstream(
    upstream: ScriptedLLM, provider: OpenAIProvider
) -> None:
    upstream.script(Text("x" * 200, chunks=100, delay_s=0.02))
    stream = provider.stream(HELLO)
    first = await anext(stream)
    assert first.text
    await stream.aclose()
    await wait_until(lambda: upstream.abandoned_streams == 1)
    assert upstream.finished_streams == 0


async def test_cancelling_the_consumer_task_stops_the_stream(
    upstream: ScriptedLLM, provider: OpenAIProvider
) -> None:
    upstream.script(Text("y" * 200, chunks=100, delay_s=0.02))
    got_one = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(HELLO):
            got_one.set()

    task = asyncio.create_task(consume())
    await got_one.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: upstream.abandoned_streams == 1)


async def test_check_lists_models_without_spending_tokens(
    upstream: ScriptedLLM, provider: OpenAIProvider
) -> None:
    detail = await provider.check()
    assert upstream.base_url in detail
    assert [r.path for r in upstream.requests] == ["/v1/models"]
    assert upstream.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_the_api_key_never_reaches_the_logs(
    upstream: ScriptedLLM, provider: OpenAIProvider, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.script(HttpError(500), Text("ok"))
    with caplog.at_level(logging.DEBUG):
        await provider.complete(HELLO)
    assert any("retrying" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in repr(record.__dict__)
