"""SSE decoding, the OpenAI wire format and chunk accumulation: pure functions, no servers."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

from soma.llm.accumulate import ResultBuilder, collect
from soma.llm.openai_wire import ToolNames, decode_chunk, encode_request, error_message
from soma.llm.sse import ServerSentEvent, SSEDecoder, aiter_sse
from soma.llm.types import (
    ChatChunk,
    ChatMessage,
    ChatRequest,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
)


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def test_sse_events_are_dispatched_on_blank_lines() -> None:
    events = [
        e
        async for e in aiter_sse(
            _lines(
                ": keep-alive comment",
                "data: first",
                "",
                "event: custom",
                "id: 7",
                "data:no-space",
                "data: second line",
                "",
                "",
                "data: unterminated",
            )
        )
    ]
    assert events == [
        ServerSentEvent("first"),
        ServerSentEvent("no-space\nsecond line", event="custom", id="7"),
    ]


def test_sse_decoder_ignores_unknown_fields_and_keeps_last_id() -> None:
    decoder = SSEDecoder()
    assert decoder.decode("retry: 100") is None
    assert decoder.decode("id: a") is None
    assert decoder.decode("data: x") is None
    assert decoder.decode("") == ServerSentEvent("x", id="a")
    assert decoder.decode("data: y") is None
    assert decoder.decode("") == ServerSentEvent("y", id="a")


def test_request_body_sends_empty_assistant_content_and_tools() -> None:
    request = ChatRequest(
        messages=[
            ChatMessage("system", "be brief"),
            ChatMessage("user", "weather?"),
            ChatMessage("assistant", "", tool_calls=(ToolCall("c1", "weather", '{"city":"x"}'),)),
            ChatMessage("tool", "sunny", tool_call_id="c1", name="weather"),
        ],
        tools=[ToolSpec("weather", "Weather by city", {"type": "object"})],
        max_tokens=50,
        temperature=0.1,
        stop=["END"],
    )
    body = encode_request("gpt-x", request)
    assert body["model"] == "gpt-x"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assistant = body["messages"][2]
    assert assistant["content"] == ""
    assert assistant["tool_calls"][0]["function"] == {
        "name": "weather",
        "arguments": '{"city":"x"}',
    }
    assert body["messages"][3] == {
        "role": "tool",
        "content": "sunny",
        "tool_call_id": "c1",
        "name": "weather",
    }
    assert body["tools"][0]["function"]["name"] == "weather"
    assert (body["max_tokens"], body["temperature"], body["stop"]) == (50, 0.1, ["END"])
    assert "stream_options" not in encode_request("m", request, stream=False)


def test_decode_chunk_reads_text_tool_deltas_finish_and_usage() -> None:
    assert decode_chunk({"choices": [{"delta": {"role": "assistant", "content": ""}}]}) is None
    text = decode_chunk({"choices": [{"delta": {"content": "Hi"}, "finish_reason": None}]})
    assert text == ChatChunk(text="Hi")
    tool = decode_chunk(
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [
                            {"index": 1, "id": "c", "function": {"name": "f", "arguments": "{"}}
                        ]
                    }
                }
            ]
        }
    )
    assert tool == ChatChunk(tool_calls=(ToolCallDelta(1, "c", "f", "{"),))
    usage = decode_chunk({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    assert usage == ChatChunk(usage=Usage(3, 4))
    assert error_message({"error": {"message": "boom"}}) == "boom"
    assert error_message({"choices": []}) is None


async def test_accumulator_merges_tool_call_fragments_by_index() -> None:
    async def chunks() -> AsyncIterator[ChatChunk]:
        yield ChatChunk(text="Let me ", model="gpt", provider="openai")
        yield ChatChunk(text="check.")
        yield ChatChunk(tool_calls=(ToolCallDelta(0, "a", "weather", '{"ci'),))
        yield ChatChunk(tool_calls=(ToolCallDelta(1, "b", "time", ""),))
        yield ChatChunk(tool_calls=(ToolCallDelta(0, arguments='ty": "Oslo"}'),))
        yield ChatChunk(tool_calls=(ToolCallDelta(1, arguments='{"tz": "UTC"}'),))
        yield ChatChunk(finish_reason="tool_calls")
        yield ChatChunk(usage=Usage(10, 5))

    result = await collect(chunks())
    assert result.content == "Let me check."
    assert [(c.id, c.name) for c in result.tool_calls] == [("a", "weather"), ("b", "time")]
    assert json.loads(result.tool_calls[0].arguments) == {"city": "Oslo"}
    assert json.loads(result.tool_calls[1].arguments) == {"tz": "UTC"}
    assert (result.finish_reason, result.usage, result.model, result.provider) == (
        "tool_calls",
        Usage(10, 5),
        "gpt",
        "openai",
    )


def test_accumulator_names_calls_without_ids_and_empty_arguments() -> None:
    builder = ResultBuilder("m", "p")
    builder.add(ChatChunk(tool_calls=(ToolCallDelta(0, name="ping"),)))
    (call,) = builder.result().tool_calls
    assert call.name == "ping"
    assert call.id.startswith("call_")
    assert call.arguments == "{}"


def test_tool_names_the_wire_refuses_go_out_safe_and_come_back_as_they_were() -> None:
    tools = [ToolSpec("demo.add", "adds"), ToolSpec("demo_add", "clash"), ToolSpec("files", "f")]
    history = [ChatMessage(role="assistant", tool_calls=(ToolCall("c1", "demo.add", "{}"),))]
    request = ChatRequest(messages=history, tools=tools)
    names = ToolNames.of(request)
    body = encode_request("m", request, names=names)
    sent = [t["function"]["name"] for t in body["tools"]]
    assert sent == ["demo_add", "demo_add_2", "files"]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name) for name in sent)
    assert body["messages"][0]["tool_calls"][0]["function"]["name"] == "demo_add"
    chunk = decode_chunk(
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "x", "function": {
            "name": "demo_add", "arguments": "{}"}}]}}]},
        names,
    )  # fmt: skip
    assert chunk is not None and chunk.tool_calls[0].name == "demo.add"
