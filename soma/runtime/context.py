"""Context building: agent instructions plus as much recent history as the model can take."""

from __future__ import annotations

from collections.abc import Sequence

from soma.llm.types import ChatMessage, Role
from soma.storage.repositories.messages import Message

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4
_ROLES: dict[str, Role] = {"user": "user", "assistant": "assistant", "system": "system"}


def estimate_tokens(text: str) -> int:
    """A deliberately conservative estimate; no tokenizer is shared by every provider."""
    return len(text) // CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS


def build_context(
    instructions: str, history: Sequence[Message], budget_tokens: int
) -> list[ChatMessage]:
    """System prompt, then the newest messages (oldest first) that fit in `budget_tokens`.

    The last message (the one being answered) is always kept, truncated if it alone is too long.
    """
    system = [ChatMessage(role="system", content=instructions)] if instructions else []
    remaining = budget_tokens - sum(estimate_tokens(m.content) for m in system)
    chosen: list[ChatMessage] = []
    for message in reversed(history):
        role = _ROLES.get(message.role)
        if role is None:
            continue
        cost = estimate_tokens(message.content)
        if cost > remaining:
            if not chosen:
                keep = max(remaining - MESSAGE_OVERHEAD_TOKENS, 1) * CHARS_PER_TOKEN
                chosen.append(ChatMessage(role=role, content=message.content[-keep:]))
            break
        chosen.append(ChatMessage(role=role, content=message.content))
        remaining -= cost
    chosen.reverse()
    return system + chosen
