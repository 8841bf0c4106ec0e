"""A run's events as A2A stream responses (`SendStreamingMessage`, `SubscribeToTask`).

The task comes first (submitted), then status updates as the run moves, and the reply as
appended chunks of the `reply` artifact; the final text replaces them whole, so a client
that missed chunks still ends with the reply. The stream ends with the terminal status.
"""

from __future__ import annotations

from typing import Any

import orjson

from soma.doors.a2a.wire import artifact_json, result, text_parts
from soma.runs.events import EventType, RunEvent

_TERMINAL = {
    EventType.COMPLETED: "TASK_STATE_COMPLETED",
    EventType.FAILED: "TASK_STATE_FAILED",
    EventType.CANCELLED: "TASK_STATE_CANCELED",
}


class TaskEvents:
    def __init__(self, request_id: Any, task_id: str, context_id: str) -> None:
        self._rid = request_id
        self._ids = {"taskId": task_id, "contextId": context_id}
        self._chunks = 0

    def _data(self, response: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(result(self._rid, response)) + b"\n\n"

    def _status(self, state: str, text: str | None = None) -> bytes:
        status: dict[str, Any] = {"state": state}
        if text:
            status["message"] = {"messageId": f"status-{self._ids['taskId']}-{state}",
                                 **self._ids, "role": "ROLE_AGENT",
                                 "parts": text_parts(text)}  # fmt: skip
        return self._data({"statusUpdate": {**self._ids, "status": status}})

    def _artifact(self, text: str, append: bool, last: bool) -> bytes:
        artifact = artifact_json(self._ids["taskId"], text)
        update = {**self._ids, "artifact": artifact, "append": append, "lastChunk": last}
        return self._data({"artifactUpdate": update})

    def __call__(self, event: RunEvent) -> bytes:
        kind, data = event.type, event.data
        if kind == EventType.QUEUED:
            task = {"id": self._ids["taskId"], "contextId": self._ids["contextId"],
                    "status": {"state": "TASK_STATE_SUBMITTED"}}  # fmt: skip
            return self._data({"task": task})
        if kind == EventType.STARTED:
            return self._status("TASK_STATE_WORKING")
        if kind == EventType.DELTA:
            text = str(data.get("text", ""))
            if not text:
                return b""
            self._chunks += 1
            return self._artifact(text, append=self._chunks > 1, last=False)
        if kind == EventType.MESSAGE_COMPLETED:
            content = str((data.get("message") or {}).get("content", ""))
            return self._artifact(content, append=False, last=True)
        if kind in _TERMINAL:
            failure = str(data["error"]) if kind == EventType.FAILED and "error" in data else None
            return self._status(_TERMINAL[EventType(kind)], failure)
        return b""
