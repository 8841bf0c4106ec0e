"""OpenAI chat-completions wire format: request bodies out, stream chunks in."""

from __future__ import annotations

from typing import Any

from soma.llm.types import ChatChunk, ChatMessage, ChatRequest, ToolCallDelta, ToolSpec, Usage


def encode_message(message: ChatMessage) -> dict[str, Any]:
    # `content` is always a string: some servers (llama.cpp's) answer 500 to a null content.
    out: dict[str, Any] = {"role": message.role, "content": message.content or ""}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        out["name"] = message.name
    return out


def encode_tool(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": dict(tool.parameters),
        },
    }


def encode_request(model: str, request: ChatRequest, *, stream: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [encode_message(m) for m in request.messages],
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if request.tools:
        body["tools"] = [encode_tool(t) for t in request.tools]
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.stop:
        body["stop"] = list(request.stop)
    return body


def decode_usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
    )


def _decode_tool_deltas(raw: Any) -> tuple[ToolCallDelta, ...]:
    if not isinstance(raw, list):
        return ()
    deltas = []
    for position, item in enumerate(raw):
        function = item.get("function") or {}
        deltas.append(
            ToolCallDelta(
                index=int(item.get("index", position)),
                id=item.get("id") or None,
                name=function.get("name") or None,
                arguments=function.get("arguments") or "",
            )
        )
    return tuple(deltas)


def decode_chunk(payload: dict[str, Any]) -> ChatChunk | None:
    """The chunk a `chat.completion.chunk` object carries, or None when it carries nothing."""
    usage = decode_usage(payload.get("usage"))
    choices = payload.get("choices")
    text = ""
    deltas: tuple[ToolCallDelta, ...] = ()
    finish_reason = None
    if choices:
        choice = choices[0]
        delta = choice.get("delta") or choice.get("message") or {}
        text = delta.get("content") or ""
        deltas = _decode_tool_deltas(delta.get("tool_calls"))
        finish_reason = choice.get("finish_reason")
    if not text and not deltas and finish_reason is None and usage is None:
        return None
    return ChatChunk(text=text, tool_calls=deltas, finish_reason=finish_reason, usage=usage)


def error_message(payload: Any) -> str | None:
    """The message of an OpenAI-style `{"error": ...}` body, if it is one."""
    if isinstance(payload, dict) and "error" in payload:
        error = payload["error"]
        if isinstance(error, dict):
            return str(error.get("message") or error)
        return str(error)
    return None
