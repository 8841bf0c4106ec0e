"""The bundled SmolLM2 GGUF through llama.cpp: real tokens, tool calls and prompt cancellation."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from soma.llm.errors import ProviderRequestError, ProviderUnavailableError
from soma.llm.local import LocalProvider
from soma.llm.types import ChatMessage, ChatRequest, ToolSpec

pytestmark = pytest.mark.integration

WEATHER = ToolSpec(
    "get_weather",
    "Get the weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.fixture
async def local() -> AsyncIterator[LocalProvider]:
    provider = LocalProvider("local", context_tokens=2048, max_concurrency=2, timeout_s=60)
    yield provider
    await provider.aclose()


async def wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_construction_loads_nothing_and_check_spends_no_tokens(
    local: LocalProvider,
) -> None:
    assert not local.loaded
    assert "present, loads on first use" in await local.check()
    await local.load()
    assert local.loaded
    assert "loaded SmolLM2-135M-Instruct.Q4_1.gguf" in await local.check()


async def test_streams_a_real_answer_to_a_short_prompt(local: LocalProvider) -> None:
    request = ChatRequest([ChatMessage("user", "What is the capital of France?")], max_tokens=40)
    chunks = [c async for c in local.stream(request)]
    text = "".join(c.text for c in chunks)
    assert text.strip()
    assert len([c for c in chunks if c.text]) > 1
    final = chunks[-1]
    assert final.finish_reason in ("stop", "length")
    assert final.usage is not None
    assert final.usage.prompt_tokens > 10
    assert 0 < final.usage.completion_tokens <= 40
    assert local.active_generations == 0


async def test_a_cancelled_local_stream_stops_generating(local: LocalProvider) -> None:
    request = ChatRequest(
        [ChatMessage("user", "Write a very long story about dragons and castles.")],
        max_tokens=1500,
    )
    stream = local.stream(request)
    first = await anext(stream)
    assert first.text
    assert local.active_generations == 1
    await stream.aclose()
    await wait_until(lambda: local.active_generations == 0)
    # The instance went back to the pool and still answers.
    again = await local.complete(ChatRequest([ChatMessage("user", "Hi")], max_tokens=5))
    assert again.usage is not None and again.usage.completion_tokens > 0


async def test_a_cancelled_consumer_task_stops_generation(local: LocalProvider) -> None:
    started = asyncio.Event()

    async def consume() -> None:
        request = ChatRequest([ChatMessage("user", "Count to one thousand.")], max_tokens=1500)
        async for _ in local.stream(request):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: local.active_generations == 0)


async def test_tools_use_chatml_function_calling(local: LocalProvider) -> None:
    request = ChatRequest(
        [
            ChatMessage("system", "You are a helpful assistant."),
            ChatMessage("user", "What is the weather in Paris? Use the tool."),
        ],
        tools=[WEATHER],
        temperature=0.0,
    )
    result = await local.complete(request)
    assert result.finish_reason == "tool_calls"
    (call,) = result.tool_calls
    assert call.name == "get_weather"
    assert isinstance(json.loads(call.arguments), dict)
    assert result.usage is not None and result.usage.completion_tokens > 0


async def test_two_concurrent_streams_use_two_instances(local: LocalProvider) -> None:
    request = ChatRequest([ChatMessage("user", "Name a colour.")], max_tokens=8)
    first, second = await asyncio.gather(local.complete(request), local.complete(request))
    assert first.usage is not None and second.usage is not None
    assert "instances=2" in await local.check()


async def test_a_prompt_longer_than_the_context_is_rejected() -> None:
    provider = LocalProvider("small", context_tokens=256, timeout_s=60)
    try:
        words = " ".join(["lorem"] * 600)
        with pytest.raises(ProviderRequestError, match="context window"):
            await provider.complete(ChatRequest([ChatMessage("user", words)]))
        # Still usable afterwards.
        ok = await provider.complete(ChatRequest([ChatMessage("user", "Hi")], max_tokens=3))
        assert ok.usage is not None
    finally:
        await provider.aclose()


async def test_a_missing_model_file_is_unavailable(tmp_path: Path) -> None:
    provider = LocalProvider("gone", path=tmp_path / "missing.gguf")
    try:
        with pytest.raises(ProviderUnavailableError, match="model file not found"):
            await provider.check()
        with pytest.raises(ProviderUnavailableError, match="model file not found"):
            await provider.complete(ChatRequest([ChatMessage("user", "Hi")]))
    finally:
        await provider.aclose()


async def test_a_file_that_is_not_gguf_fails_to_load(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a model")
    provider = LocalProvider("bogus", path=bogus)
    try:
        with pytest.raises(ProviderUnavailableError, match="cannot load"):
            await provider.load()
    finally:
        await provider.aclose()
