"""Responses on the wire: a run as a `response` object, and its events as semantic events.

A response is a run (`resp_<run id>`); what the request said about it (model, store,
background, ...) rides on the run's user message as `door` metadata. Server-side tool calls
the agent makes appear as `function_call` and `function_call_output` output items.

Stream events are numbered from the run's event ids (`sequence_number` = id x 10 + the
event's place among those one run event becomes), so the numbers are the same on every
replay and `starting_after=N` resumes any stream, on any replica, after a restart too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from soma.doors.openai.chunks import usage_json
from soma.runs.events import EventType, RunEvent, RunStatus
from soma.storage.repositories.messages import Message
from soma.storage.repositories.runs import Run

DOOR = "responses"
PREFIX = "resp_"
PER_EVENT = 10
"""Stream events one run event may become, at most (a whole message at once is six)."""
_STATUS = {
    RunStatus.QUEUED: "queued",
    RunStatus.RUNNING: "in_progress",
    RunStatus.AWAITING_TOOLS: "in_progress",
    RunStatus.AWAITING_APPROVAL: "in_progress",
    RunStatus.CANCELLING: "in_progress",
    RunStatus.COMPLETED: "completed",
    RunStatus.FAILED: "failed",
    RunStatus.CANCELLED: "cancelled",
}


def response_id(run_id: str) -> str:
    return PREFIX + run_id


def run_id_of(response: str) -> str | None:
    return response[len(PREFIX) :] if response.startswith(PREFIX) and len(response) > 5 else None


def base_json(run: Run, door: dict[str, Any]) -> dict[str, Any]:
    """The fields of a response that do not change while its run goes on."""
    return {
        "id": response_id(run.id),
        "object": "response",
        "created_at": int(run.created_at.timestamp()),
        "model": door.get("model", ""),
        "background": bool(door.get("background", False)),
        "store": bool(door.get("store", True)),
        "previous_response_id": door.get("previous_response_id"),
        "instructions": door.get("instructions"),
        "metadata": door.get("metadata") or {},
        "user": door.get("user"),
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "temperature": None,
        "top_p": None,
        "truncation": "disabled",
        "text": {"format": {"type": "text"}},
        "incomplete_details": None,
    }


def snapshot(
    base: dict[str, Any],
    status: str,
    output: Sequence[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    body = {**base, "status": status, "output": list(output), "usage": None, "error": None}
    if usage is not None:
        tokens = usage_json(usage)
        body["usage"] = {
            "input_tokens": tokens["prompt_tokens"],
            "output_tokens": tokens["completion_tokens"],
            "total_tokens": tokens["total_tokens"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
    if error is not None:
        code = "cancelled" if status == "cancelled" else "server_error"
        body["error"] = {"code": code, "message": error}
    return body


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"type": "message", "id": item_id, "role": "assistant", "status": status,
            "content": content if status == "completed" else []}  # fmt: skip


def call_item(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id, "name": name,
            "arguments": arguments, "status": "completed"}  # fmt: skip


def call_output_item(call_id: str, output: str) -> dict[str, Any]:
    return {"type": "function_call_output", "id": f"fco_{call_id}", "call_id": call_id,
            "output": output, "status": "completed"}  # fmt: skip


def output_of(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """A run's output items from its stored messages (its question excluded)."""
    items: list[dict[str, Any]] = []
    for message in sorted(messages, key=lambda m: m.seq):
        if message.role == "assistant":
            if message.content:
                items.append(message_item(f"msg_{message.id}", message.content))
            for call in message.tool_calls or ():
                function = call.get("function") or {}
                items.append(
                    call_item(str(call.get("id", "")), str(function.get("name", "")),
                              str(function.get("arguments", "")))
                )  # fmt: skip
        elif message.role == "tool":
            items.append(call_output_item(message.tool_call_id or "", message.content))
    return items


def response_json(run: Run, messages: Sequence[Message], door: dict[str, Any]) -> dict[str, Any]:
    """The whole response as `GET /v1/responses/{id}` answers it."""
    status = _STATUS.get(RunStatus(run.status), "in_progress")
    produced = [m for m in messages if m.role != "user"]
    usage = run.usage if status == "completed" else None
    return snapshot(base_json(run, door), status, output_of(produced), usage, run.error)


class ResponseEvents:
    """Renders one run's events as the Responses stream, skipping numbers up to `after`."""

    def __init__(self, base: dict[str, Any], after: int = -1) -> None:
        self._base = base
        self._after = after
        self._output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        self._calls: dict[str, str] = {}
        self._out = b""
        self._seq = 0

    def _emit(self, kind: str, body: dict[str, Any]) -> None:
        seq, self._seq = self._seq, self._seq + 1
        if seq <= self._after:
            return
        data = orjson.dumps({"type": kind, "sequence_number": seq, **body})
        self._out += b"event: %s\ndata: %s\n\n" % (kind.encode(), data)

    def _snapshot(self, status: str, **extra: Any) -> dict[str, Any]:
        return {"response": snapshot(self._base, status, self._output, **extra)}

    def _open_message(self, event_id: int) -> dict[str, Any]:
        if self._open is None:
            item_id = f"msg_{self._base['id'][len(PREFIX) :]}_{event_id}"
            self._open = {"id": item_id, "index": len(self._output), "text": ""}
            self._output.append(message_item(item_id, "", "in_progress"))
            where = {"output_index": self._open["index"]}
            self._emit("response.output_item.added", {**where, "item": self._output[-1]})
            part = {"type": "output_text", "text": "", "annotations": []}
            added = {**where, "item_id": item_id, "content_index": 0, "part": part}
            self._emit("response.content_part.added", added)
        return self._open

    def _text(self, event_id: int, text: str) -> None:
        opened = self._open_message(event_id)
        opened["text"] += text
        self._emit("response.output_text.delta", {"item_id": opened["id"], "output_index":
                   opened["index"], "content_index": 0, "delta": text, "logprobs": []})  # fmt: skip

    def _close_message(self) -> None:
        opened, self._open = self._open, None
        if opened is None:
            return
        where = {"item_id": opened["id"], "output_index": opened["index"], "content_index": 0}
        text = opened["text"]
        self._emit("response.output_text.done", {**where, "text": text, "logprobs": []})
        part = {"type": "output_text", "text": text, "annotations": []}
        self._emit("response.content_part.done", {**where, "part": part})
        item = message_item(opened["id"], text)
        self._output[opened["index"]] = item
        index = {"output_index": opened["index"]}
        self._emit("response.output_item.done", {**index, "item": item})

    def _abandon(self) -> None:
        """A retried attempt starts over: the text an earlier one began is no output."""
        opened, self._open = self._open, None
        if opened is None:
            return
        item = {**message_item(opened["id"], ""), "status": "incomplete", "content": []}
        self._output[opened["index"]] = item
        self._emit("response.output_item.done", {"output_index": opened["index"], "item": item})

    def _item(self, item: dict[str, Any]) -> None:
        self._close_message()
        index = {"output_index": len(self._output)}
        self._output.append(item)
        self._emit("response.output_item.added", {**index, "item": item})
        self._emit("response.output_item.done", {**index, "item": item})

    def __call__(self, event: RunEvent) -> bytes:
        self._out, self._seq = b"", event.id * PER_EVENT
        kind, data = event.type, event.data
        if kind == EventType.QUEUED:
            self._emit("response.created", self._snapshot("queued"))
        elif kind == EventType.STARTED:
            self._abandon()
            self._emit("response.in_progress", self._snapshot("in_progress"))
        elif kind == EventType.DELTA:
            if text := str(data.get("text", "")):
                self._text(event.id, text)
        elif kind == EventType.TOOL_CALL:
            call_id = str(data.get("call_id", ""))
            self._calls[str(data.get("id", ""))] = call_id
            args = data.get("args")
            arguments = args if isinstance(args, str) else orjson.dumps(args).decode()
            self._item(call_item(call_id, str(data.get("name", "")), arguments))
        elif kind == EventType.TOOL_RESULT:
            call_id = self._calls.get(str(data.get("id", "")), str(data.get("id", "")))
            self._item(call_output_item(call_id, str(data.get("output", ""))))
        elif kind == EventType.MESSAGE_COMPLETED:
            content = str((data.get("message") or {}).get("content", ""))
            if self._open is None and content:
                self._text(event.id, content)
            self._close_message()
        elif kind == EventType.COMPLETED:
            self._close_message()
            usage = data.get("usage") or {}
            self._emit("response.completed", self._snapshot("completed", usage=usage))
        elif kind in (EventType.FAILED, EventType.CANCELLED):
            self._close_message()
            status = "failed" if kind == EventType.FAILED else "cancelled"
            error = str(data.get("error") or data.get("reason") or status)
            self._emit("response.failed", self._snapshot(status, error=error))
        return self._out
