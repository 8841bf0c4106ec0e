"""What OpenAI requests carry as conversation: earlier messages and the one to answer.

Both doors take messages of roles system/developer/user/assistant whose content is a string
or a list of text parts; everything else (images, audio, client-side tool results) is refused
with a 400 naming the parameter, never dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from soma.doors.openai.errors import DoorError, invalid, unsupported
from soma.runs.commands import Prior

MAX_CONTENT_CHARS = 100_000
"""As on the native API: one message's text."""
TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True, slots=True)
class Said:
    role: str
    content: str
    param: str


def text_of(content: str | Sequence[Any] | None, param: str) -> str:
    """The text of a message's content: a string, or text parts joined."""
    if content is None:
        raise invalid(f"'{param}' must not be null", param)
    if isinstance(content, str):
        text = content
    else:
        pieces = []
        for index, part in enumerate(content):
            where = f"{param}[{index}]"
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise invalid(f"'{where}' must be an object with a 'type'", where)
            if part["type"] not in TEXT_PARTS:
                raise unsupported(f"{where}.type", f"'{part['type']}' parts (only text is)")
            if not isinstance(part.get("text"), str):
                raise invalid(f"'{where}.text' must be a string", f"{where}.text")
            pieces.append(part["text"])
        text = "".join(pieces)
    if len(text) > MAX_CONTENT_CHARS:
        raise invalid(f"'{param}' is longer than {MAX_CONTENT_CHARS} characters", param)
    return text


def said(role: str, content: str | Sequence[Any] | None, param: str) -> Said:
    """One message in the platform's roles (a developer message is a system message)."""
    mapped = ROLES.get(role)
    if mapped is None:
        why = "client-side tools are not supported; the agent's own tools run on the server"
        raise unsupported(f"{param}.role", f"role '{role}' ({why})")
    return Said(mapped, text_of(content, f"{param}.content"), param)


def split_turn(messages: Sequence[Said], param: str) -> tuple[list[Prior], str]:
    """The earlier messages and the last one, which must be the user's and not empty."""
    if not messages:
        raise invalid(f"'{param}' must hold at least one message", param)
    last = messages[-1]
    if last.role != "user":
        raise DoorError(400, f"the last of '{param}' must be a user message", last.param)
    if not last.content.strip():
        raise invalid(f"'{last.param}.content' must not be empty", f"{last.param}.content")
    return [Prior(m.role, m.content) for m in messages[:-1]], last.content
