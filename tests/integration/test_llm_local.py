"""The bundled SmolLM2 GGUF through llama.cpp (xllamacpp): real tokens, tools and cancellation."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from soma.llm.accumulate import ResultBuilder
from soma.llm.errors import ProviderRequestError, ProviderUnavailableError
from soma.llm.local import LocalProvider
from soma.llm.local_model import LocalModel, bundled_model_path
from soma.llm.types import ChatChunk, ChatMessage, ChatRequest, ChatResult, ToolCall, ToolSpec

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


def assert_call_or_text(result: ChatResult, offered: set[str]) -> None:
    """The shape a weak model can be held to: a call of an offered tool, or some text."""
    if result.tool_calls:
        assert result.finish_reason == "tool_calls"
        for call in result.tool_calls:
            assert call.name in offered
            assert isinstance(json.loads(call.arguments), dict)
    else:
        assert result.content.strip()
        assert result.finish_reason in ("stop", "length")
    assert result.usage is not None and result.usage.completion_tokens > 0


async def test_with_tools_the_model_calls_one_or_answers(local: LocalProvider) -> None:
    for question in ("What is the weather in Paris? Use the tool.", "Say hello."):
        request = ChatRequest(
            [
                ChatMessage("system", "You are a helpful assistant."),
                ChatMessage("user", question),
            ],
            tools=[WEATHER],
            temperature=0.0,
            max_tokens=100,
        )
        assert_call_or_text(await local.complete(request), {"get_weather"})


async def test_a_tool_result_in_the_history_is_answered(local: LocalProvider) -> None:
    request = ChatRequest(
        [
            ChatMessage("user", "What is the weather in Paris? Use the tool."),
            ChatMessage("assistant", "", (ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)),
            ChatMessage("tool", "Sunny, 21 C", tool_call_id="call_1", name="get_weather"),
        ],
        tools=[WEATHER],
        temperature=0.0,
        max_tokens=100,
    )
    assert_call_or_text(await local.complete(request), {"get_weather"})


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


@pytest.fixture(scope="module")
def model() -> Iterator[LocalModel]:
    loaded = LocalModel.load(bundled_model_path(), 2048)
    yield loaded
    loaded.close()


def generate(model: LocalModel, request: ChatRequest) -> ChatResult:
    builder = ResultBuilder()
    model.generate(request, builder.add, threading.Event())
    return builder.result()


def test_the_bundled_template_shows_no_tools_so_the_json_answer_carries_them(
    model: LocalModel,
) -> None:
    assert not model.native_tools
    request = ChatRequest(
        [ChatMessage("user", "What is the weather in Paris?")],
        tools=[WEATHER],
        temperature=0.0,
        max_tokens=100,
    )
    result = generate(model, request)
    assert_call_or_text(result, {"get_weather"})
    # The JSON wrapper never leaks into the text.
    assert not result.content.lstrip().startswith("{")


def test_cancelling_stops_the_generation_at_the_next_token(model: LocalModel) -> None:
    cancelled = threading.Event()
    after_cancel: list[ChatChunk] = []
    before_cancel: list[ChatChunk] = []

    def emit(chunk: ChatChunk) -> None:
        (after_cancel if cancelled.is_set() else before_cancel).append(chunk)
        if len(before_cancel) == 3:
            cancelled.set()

    request = ChatRequest(
        [ChatMessage("user", "Write a very long story about dragons and castles.")],
        max_tokens=1500,
    )
    model.generate(request, emit, cancelled)
    assert len(before_cancel) == 3
    assert after_cancel == []  # not even the final chunk: a cancelled generation has no usage
    # The single slot is free again at once: the next request runs, not queued behind 1500.
    again = generate(model, ChatRequest([ChatMessage("user", "Hi")], max_tokens=5))
    assert again.usage is not None and 0 < again.usage.completion_tokens <= 5


def test_abort_stops_the_generation(model: LocalModel) -> None:
    chunks: list[ChatChunk] = []

    def emit(chunk: ChatChunk) -> None:
        chunks.append(chunk)
        if len(chunks) == 2:
            model.abort()

    request = ChatRequest([ChatMessage("user", "Count to one thousand.")], max_tokens=1500)
    model.generate(request, emit, threading.Event())
    assert len(chunks) == 2
    # The next generation is not aborted by the flag the last one left.
    again = generate(model, ChatRequest([ChatMessage("user", "Hi")], max_tokens=5))
    assert again.usage is not None and again.usage.completion_tokens > 0


def test_an_exception_in_emit_reaches_the_caller(model: LocalModel) -> None:
    def emit(chunk: ChatChunk) -> None:
        raise KeyError("consumer broke")

    with pytest.raises(KeyError, match="consumer broke"):
        model.generate(
            ChatRequest([ChatMessage("user", "Hi")], max_tokens=5), emit, threading.Event()
        )


# A Hermes-style template (tools in the system turn, calls in <tool_call> tags): with it the
# engine renders and parses the tools itself.
HERMES_TEMPLATE = """{%- if tools %}<|im_start|>system
You may call functions. Their signatures are within <tools></tools> XML tags:
<tools>{% for tool in tools %}
{{ tool | tojson }}{% endfor %}
</tools>
For each call, return {"name": <function-name>, "arguments": <args-json-object>} within
<tool_call></tool_call> XML tags.<|im_end|>
{% endif %}{%- for message in messages %}{%- if message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% elif message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant
{%- for tool_call in message.tool_calls %}
<tool_call>
{"name": "{{ tool_call.function.name }}", "arguments": {{ tool_call.function.arguments | tojson }}}
</tool_call>{%- endfor %}<|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


def test_a_template_that_shows_tools_gets_them_from_the_engine() -> None:
    model = LocalModel.load(bundled_model_path(), 2048, chat_template=HERMES_TEMPLATE)
    try:
        assert model.native_tools
        request = ChatRequest(
            [ChatMessage("user", "What is the weather in Paris?")],
            tools=[WEATHER],
            temperature=0.0,
            max_tokens=60,
        )
        assert_call_or_text(generate(model, request), {"get_weather"})
    finally:
        model.close()
