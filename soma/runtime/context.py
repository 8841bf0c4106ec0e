"""Context building: agent instructions plus as much recent history as the model can take."""

from __future__ import annotations

from collections.abc import Sequence

from soma.llm.types import ChatMessage, Role, ToolCall
from soma.storage.repositories.messages import Message

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4
_ROLES: dict[str, Role] = {
    "user": "user",
    "assistant": "assistant",
    "system": "system",
    "tool": "tool",
}


def estimate_tokens(text: str) -> int:
    """A deliberately conservative estimate; no tokenizer is shared by every provider."""
    return len(text) // CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS


def build_context(
    instructions: str,
    history: Sequence[Message],
    budget_tokens: int,
    recalled: str = "",
) -> list[ChatMessage]:
    """System prompt (with `recalled` memories), then the newest messages (oldest first) that
    fit in `budget_tokens`.

    The last message (the one being answered) is always kept, truncated if it alone is too long.
    A tool result never starts the context without the call it answers (models refuse that).
    """
    prompt = "\n\n".join(part for part in (instructions, recalled) if part)
    system = [ChatMessage(role="system", content=prompt)] if prompt else []
    remaining = budget_tokens - sum(estimate_tokens(m.content) for m in system)
    chosen: list[ChatMessage] = []
    for message in reversed(history):
        role = _ROLES.get(message.role)
        if role is None:
            continue
        cost = estimate_tokens(message.content + _calls_text(message))
        if cost > remaining:
            if not chosen:
                keep = max(remaining - MESSAGE_OVERHEAD_TOKENS, 1) * CHARS_PER_TOKEN
                chosen.append(_chat_message(role, message, message.content[-keep:]))
            break
        chosen.append(_chat_message(role, message, message.content))
        remaining -= cost
    chosen.reverse()
    while len(chosen) > 1 and chosen[0].role == "tool":
        chosen.pop(0)
    return system + chosen


def _chat_message(role: Role, message: Message, content: str) -> ChatMessage:
    if role == "tool":
        return ChatMessage(role="tool", content=content, tool_call_id=message.tool_call_id)
    calls = tuple(
        ToolCall(str(call.get("id", "")), str(fn.get("name", "")), str(fn.get("arguments", "")))
        for call in message.tool_calls or ()
        if isinstance(fn := call.get("function"), dict)
    )
    return ChatMessage(role=role, content=content, tool_calls=calls)


def _calls_text(message: Message) -> str:
    return "".join(
        str(call.get("function", {})) for call in message.tool_calls or () if isinstance(call, dict)
    )


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
            if message.run_id == run_id and not (message.tool_calls or message.role == "tool"):
                continue  # a reply to this run from an earlier attempt is not context
            # A run's tool steps and reply follow its question, whenever they were written.
            anchor = question_seq.get(message.run_id, message.seq)
        if anchor > user_seq:
            continue
        ordered.append((anchor, 0 if message.role == "user" else 1, message.seq, message))
    ordered.sort(key=lambda item: item[:3])
    return [item[3] for item in ordered]
