"""OpenAI chat-completions wire format: request bodies out, stream chunks in."""

from __future__ import annotations

import re
from typing import Any

from soma.llm.types import ChatChunk, ChatMessage, ChatRequest, ToolCallDelta, ToolSpec, Usage

_WIRE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class ToolNames:
    """Tool names as the wire allows them (`^[A-Za-z0-9_-]{1,64}$`: no dots, so `demo.add`
    goes out as `demo_add`), and back; one mapping per request, so the model's answer maps
    to exactly the tool it was offered."""

    def __init__(self, names: list[str]) -> None:
        self._out: dict[str, str] = {}
        self._back: dict[str, str] = {}
        for name in names:
            if name in self._out:
                continue
            wire = name if _WIRE_NAME.match(name) else _UNSAFE.sub("_", name)[:60] or "tool"
            candidate, n = wire, 1
            while candidate in self._back and self._back[candidate] != name:
                n += 1
                candidate = f"{wire[:60]}_{n}"
            self._out[name], self._back[candidate] = candidate, name

    @classmethod
    def of(cls, request: ChatRequest) -> ToolNames:
        names = [t.name for t in request.tools]
        names += [c.name for m in request.messages for c in m.tool_calls]
        return cls(names)

    def wire(self, name: str) -> str:
        return self._out.get(name, name)

    def real(self, wire: str) -> str:
        return self._back.get(wire, wire)


_SAME = ToolNames([])


def encode_message(message: ChatMessage, names: ToolNames = _SAME) -> dict[str, Any]:
    # `content` is always a string: some servers (llama.cpp's) answer 500 to a null content.
    out: dict[str, Any] = {"role": message.role, "content": message.content or ""}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": names.wire(call.name), "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        out["name"] = message.name
    return out


def encode_tool(tool: ToolSpec, names: ToolNames = _SAME) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": names.wire(tool.name),
            "description": tool.description,
            "parameters": dict(tool.parameters),
        },
    }


def encode_request(
    model: str, request: ChatRequest, *, stream: bool = True, names: ToolNames = _SAME
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [encode_message(m, names) for m in request.messages],
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if request.tools:
        body["tools"] = [encode_tool(t, names) for t in request.tools]
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


def _decode_tool_deltas(raw: Any, names: ToolNames) -> tuple[ToolCallDelta, ...]:
    if not isinstance(raw, list):
        return ()
    deltas = []
    for position, item in enumerate(raw):
        function = item.get("function") or {}
        deltas.append(
            ToolCallDelta(
                index=int(item.get("index", position)),
                id=item.get("id") or None,
                name=names.real(function["name"]) if function.get("name") else None,
                arguments=function.get("arguments") or "",
            )
        )
    return tuple(deltas)


def decode_chunk(payload: dict[str, Any], names: ToolNames = _SAME) -> ChatChunk | None:
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
        deltas = _decode_tool_deltas(delta.get("tool_calls"), names)
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
