"""Chat Completions on the wire: the completion object and the streamed chunks of a run."""

from __future__ import annotations

from typing import Any

import orjson

from soma.doors.openai.errors import error_body
from soma.runs.events import EventType, RunEvent
from soma.storage.repositories.messages import Message
from soma.storage.repositories.runs import Run

DONE = b"data: [DONE]\n\n"


def completion_id(run_id: str) -> str:
    return f"chatcmpl-{run_id}"


def usage_json(usage: dict[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    prompt = int(usage.get("prompt_tokens", 0))
    completion = int(usage.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}  # fmt: skip


def completion_json(run: Run, reply: Message | None, model: str) -> dict[str, Any]:
    return {
        "id": completion_id(run.id),
        "object": "chat.completion",
        "created": int(run.created_at.timestamp()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "" if reply is None else reply.content,
                    "refusal": None,
                },
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage_json(run.usage),
        "system_fingerprint": None,
    }


def _data(body: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


class ChatChunks:
    """Renders one run's events as `chat.completion.chunk`s ending with `[DONE]`.

    A failed or cancelled run ends the stream with an `error` object instead, which OpenAI's
    clients raise as an `APIError`; so does a retried attempt once text was sent (chunks cannot
    be taken back, and the retry writes the reply anew).
    """

    def __init__(self, run_id: str, model: str, created: int, include_usage: bool) -> None:
        self._run_id = run_id
        self._head = {
            "id": completion_id(run_id),
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
        }
        self._include_usage = include_usage
        self._opened = False
        self._texted = False
        self._ended = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return _data({**self._head, "choices": [choice]})

    def __call__(self, event: RunEvent) -> bytes:
        if self._ended:
            return b""
        out = b""
        if not self._opened:
            self._opened = True
            out = self._chunk({"role": "assistant", "content": ""})
        kind = event.type
        self._ended = event.terminal
        if kind == EventType.STARTED and self._texted:
            self._ended = True
            message = (
                f"the run was retried after a failure; GET /v1/runs/{self._run_id} has its reply"
            )
            out += _data(error_body(500, message, code="run_retried"))
        elif kind == EventType.DELTA:
            text = str(event.data.get("text", ""))
            if text:
                self._texted = True
                out += self._chunk({"content": text})
        elif kind == EventType.MESSAGE_COMPLETED and not self._texted:
            # The deltas were not seen (a reply written at once): say it whole.
            content = str((event.data.get("message") or {}).get("content", ""))
            if content:
                self._texted = True
                out += self._chunk({"content": content})
        elif kind == EventType.COMPLETED:
            out += self._chunk({}, "stop")
            if self._include_usage:
                usage = usage_json(event.data.get("usage"))
                out += _data({**self._head, "choices": [], "usage": usage})
            out += DONE
        elif kind == EventType.FAILED:
            message = f"the agent's run failed: {event.data.get('error', 'unknown error')}"
            out += _data(error_body(500, message, code="run_failed"))
        elif kind == EventType.CANCELLED:
            out += _data(error_body(409, "the agent's run was cancelled", code="run_cancelled"))
        return out
