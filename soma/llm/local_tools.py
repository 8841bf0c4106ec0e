"""Tools for models whose chat template cannot show them: a grammar-constrained JSON answer."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from soma.llm.types import ChatMessage, ToolSpec

# The model answers with exactly one of these objects; the grammar allows nothing else.
_FORMAT = (
    'Answer with one JSON object: {"tool_call": {"name": "<tool name>", "arguments": {...}}}'
    ' to call a tool, or {"response": "<your answer>"} to answer directly.'
)
_RESPONSE_START = re.compile(r'\s*\{\s*"response"\s*:\s*"')
_CALL_START = re.compile(r'\s*\{\s*"tool_call"\s*:')


def _call_text(name: str, arguments: str) -> str:
    try:
        parsed: Any = json.loads(arguments or "{}")
    except ValueError:
        parsed = arguments
    return json.dumps({"tool_call": {"name": name, "arguments": parsed}})


def plain_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Messages any chat template renders: results become user turns, calls the JSON above."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            # Templates without tools have no tool role: a user turn naming the call instead.
            label = message.name or message.tool_call_id or "tool"
            out.append({"role": "user", "content": f"[result of {label}]\n{message.content}"})
            continue
        parts = [message.content] if message.content else []
        parts += [_call_text(call.name, call.arguments) for call in message.tool_calls]
        out.append({"role": message.role, "content": "\n".join(parts)})
    return out


def tool_messages(
    messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
) -> list[dict[str, Any]]:
    """`plain_messages` with the tools and the answer format in the (first) system turn."""
    listing = json.dumps(
        [
            {"name": t.name, "description": t.description, "parameters": dict(t.parameters)}
            for t in tools
        ]
    )
    guide = f"You can call these tools:\n{listing}\n{_FORMAT}"
    out = plain_messages(messages)
    if out and out[0]["role"] == "system":
        out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{guide}"}
    else:
        out.insert(0, {"role": "system", "content": guide})
    return out


def answer_schema(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    """JSON schema of the answer: one call of an offered tool with its arguments, or text."""

    def single(key: str, value: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {key: value},
            "required": [key],
            "additionalProperties": False,
        }

    calls = [
        single(
            "tool_call",
            {
                "type": "object",
                "properties": {"name": {"const": t.name}, "arguments": dict(t.parameters)},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            },
        )
        for t in tools
    ]
    return {
        "anyOf": [single("response", {"type": "string"}), *calls],
        # llguidance: skip keywords it cannot enforce (formats, ...) instead of refusing.
        "x-guidance": {"lenient": True},
    }


def _string_end(raw: str, start: int) -> tuple[int, bool]:
    """How far a JSON string body from `start` can be decoded; True once its quote closed it."""
    i = safe = start
    while i < len(raw):
        char = raw[i]
        if char == '"':
            return i, True
        if char == "\\":
            if i + 1 >= len(raw):
                break
            if raw[i + 1] != "u":
                i += 2
            elif i + 6 > len(raw):
                break
            elif 0xD800 <= int(raw[i + 2 : i + 6], 16) < 0xDC00:
                # A high surrogate decodes only together with the low one after it.
                if i + 12 > len(raw):
                    break
                i += 12
            else:
                i += 6
        else:
            i += 1
        safe = i
    return safe, False


class AnswerReader:
    """Reads the constrained answer as it streams: its text as it comes, its call at the end."""

    def __init__(self) -> None:
        self._raw = ""
        self._kind: str | None = None
        self._at = 0
        self._closed = False

    def feed(self, piece: str) -> str:
        """Add generated text; returns the answer text it completed, if any."""
        self._raw += piece
        if self._kind is None:
            if match := _RESPONSE_START.match(self._raw):
                self._kind, self._at = "response", match.end()
            elif _CALL_START.match(self._raw):
                self._kind = "tool_call"
        if self._kind != "response" or self._closed:
            return ""
        end, self._closed = _string_end(self._raw, self._at)
        text: str = json.loads(f'"{self._raw[self._at : end]}"')
        self._at = end
        return text

    def tool_call(self) -> tuple[str, str] | None:
        """The call's name and JSON arguments, once the whole answer has been fed."""
        if self._kind != "tool_call":
            return None
        try:
            call = json.loads(self._raw)["tool_call"]
            return str(call["name"]), json.dumps(call["arguments"])
        except (ValueError, KeyError, TypeError):
            return None  # cut short by max_tokens or a stop string
