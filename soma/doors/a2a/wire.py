"""A2A 1.0 on the wire (JSON-RPC binding, protobuf JSON names): tasks, messages, cards, errors.

A task is a run, its context the run's session; the task's state follows the run's status.
The agent's reply is the task's one artifact (`reply`), and also its last history message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from soma.runs.events import RunStatus
from soma.storage.repositories.agents import Agent
from soma.storage.repositories.messages import Message
from soma.storage.repositories.runs import Run

PROTOCOL_VERSION = "1.0"
JSONRPC = "2.0"
# JSON-RPC error codes of the A2A specification.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
TASK_NOT_FOUND = -32001
TASK_NOT_CANCELABLE = -32002
UNSUPPORTED_OPERATION = -32004
_STATES = {
    RunStatus.QUEUED: "TASK_STATE_SUBMITTED",
    RunStatus.RUNNING: "TASK_STATE_WORKING",
    RunStatus.AWAITING_TOOLS: "TASK_STATE_WORKING",
    RunStatus.AWAITING_APPROVAL: "TASK_STATE_WORKING",
    RunStatus.CANCELLING: "TASK_STATE_WORKING",
    RunStatus.COMPLETED: "TASK_STATE_COMPLETED",
    RunStatus.FAILED: "TASK_STATE_FAILED",
    RunStatus.CANCELLED: "TASK_STATE_CANCELED",
}
WORKING = (RunStatus.RUNNING, RunStatus.AWAITING_TOOLS, RunStatus.AWAITING_APPROVAL,
           RunStatus.CANCELLING)  # fmt: skip
STATUSES_OF = {
    "TASK_STATE_SUBMITTED": (RunStatus.QUEUED,),
    "TASK_STATE_WORKING": WORKING,
    "TASK_STATE_COMPLETED": (RunStatus.COMPLETED,),
    "TASK_STATE_FAILED": (RunStatus.FAILED,),
    "TASK_STATE_CANCELED": (RunStatus.CANCELLED,),
}
"""Which run statuses a `ListTasks` state filter means."""


class RpcError(Exception):
    """A JSON-RPC error answer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def state_of(status: str) -> str:
    return _STATES.get(RunStatus(status), "TASK_STATE_WORKING")


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def text_parts(text: str) -> list[dict[str, Any]]:
    return [{"text": text}]


def message_json(message: Message) -> dict[str, Any]:
    role = "ROLE_USER" if message.role == "user" else "ROLE_AGENT"
    body = {"messageId": message.id, "contextId": message.session_id, "role": role,
            "parts": text_parts(message.content)}  # fmt: skip
    if message.run_id:
        body["taskId"] = message.run_id
    return body


def artifact_json(run_id: str, text: str) -> dict[str, Any]:
    return {"artifactId": f"reply-{run_id}", "name": "reply", "parts": text_parts(text)}


def status_json(run: Run, reply: Message | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"state": state_of(run.status)}
    when = run.finished_at or run.started_at or run.created_at
    if when is not None:
        status["timestamp"] = _ts(when)
    if run.error and run.status == RunStatus.FAILED:
        status["message"] = {"messageId": f"error-{run.id}", "contextId": run.session_id,
                             "taskId": run.id, "role": "ROLE_AGENT",
                             "parts": text_parts(run.error)}  # fmt: skip
    elif reply is not None:
        status["message"] = message_json(reply)
    return status


def task_json(
    run: Run, messages: Sequence[Message], history_length: int | None = None
) -> dict[str, Any]:
    """A run as a task: the turn's messages as history (newest `history_length`), the reply
    as its artifact."""
    said = [m for m in sorted(messages, key=lambda m: m.seq) if m.role in ("user", "assistant")]
    said = [m for m in said if m.role == "user" or not m.tool_calls]
    reply = next((m for m in reversed(said) if m.role == "assistant"), None)
    history = said if history_length is None else said[len(said) - history_length :]
    task: dict[str, Any] = {
        "id": run.id,
        "contextId": run.session_id,
        "status": status_json(run, reply if run.status == RunStatus.COMPLETED else None),
        "history": [message_json(m) for m in history] if history_length != 0 else [],
    }
    if reply is not None and run.status == RunStatus.COMPLETED:
        task["artifacts"] = [artifact_json(run.id, reply.content)]
    return task


def card_json(base_url: str, agent: Agent | None) -> dict[str, Any]:
    """The Agent Card of one agent, or (None) of the platform's default agent `assistant`."""
    name = "assistant" if agent is None else agent.name
    description = (
        "The tenant's default assistant on this SomaAgent01 platform; every agent of the "
        "caller's tenant has its own card at /a2a/agents/{name}/.well-known/agent-card.json."
        if agent is None
        else (agent.instructions[:500] or f"The agent {agent.name}.")
    )
    return {
        "name": name,
        "description": description,
        "version": "0.1.0",
        "supportedInterfaces": [
            {
                "url": f"{base_url}/a2a/agents/{name}",
                "protocolBinding": "JSONRPC",
                "protocolVersion": PROTOCOL_VERSION,
            }
        ],
        "provider": {"organization": "SomaAgent01", "url": base_url},
        "capabilities": {"streaming": True, "pushNotifications": False},
        "securitySchemes": {
            "apiKey": {
                "httpAuthSecurityScheme": {
                    "scheme": "bearer",
                    "bearerFormat": "API key",
                    "description": "An API key of the tenant with the chat scope.",
                }
            }
        },
        "securityRequirements": [{"schemes": {"apiKey": {"list": []}}}],
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [
            {
                "id": "chat",
                "name": "chat",
                "description": "Answers a message as a durable run (with the agent's "
                "instructions, tools and memory).",
                "tags": ["chat"],
                "inputModes": ["text/plain"],
                "outputModes": ["text/plain"],
            }
        ],
    }


def result(request_id: Any, value: Any) -> dict[str, Any]:
    return {"jsonrpc": JSONRPC, "id": request_id, "result": value}


def error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": JSONRPC, "id": request_id, "error": {"code": code, "message": message}}
