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


def turns_before(history: Sequence[Message], run_id: str, user_seq: int) -> list[Message]:
    """The conversation as the model should see it when answering the message at `user_seq`.

    Messages are numbered when written, so with queued runs a reply can have a higher seq than
    later questions; each reply is placed right after the question of its run, and questions
    asked after this one (and their replies) are left out.
    """
    question_seq = {m.run_id: m.seq for m in history if m.role == "user" and m.run_id}
    ordered: list[tuple[int, int, int, Message]] = []
    for message in history:
        if message.role == "user" or message.run_id is None:
            anchor = message.seq
        else:
            if message.run_id == run_id:
                continue
            anchor = question_seq.get(message.run_id, message.seq)
        if anchor > user_seq:
            continue
        ordered.append((anchor, 0 if message.role == "user" else 1, message.seq, message))
    ordered.sort(key=lambda item: item[:3])
    return [item[3] for item in ordered]
