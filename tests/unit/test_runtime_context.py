"""Context building: turn order with queued runs, and the token budget."""

from __future__ import annotations

from datetime import UTC, datetime

from soma.runtime.context import build_context, estimate_tokens, turns_before
from soma.storage.repositories.messages import Message


def msg(seq: int, role: str, content: str, run_id: str | None) -> Message:
    return Message(
        id=f"m{seq}", tenant_id="t", session_id="s", run_id=run_id, role=role, content=content,
        tool_calls=None, tool_call_id=None, metadata={}, seq=seq, idempotency_key=None,
        created_at=datetime.now(UTC),
    )  # fmt: skip


def test_replies_follow_their_question_and_later_questions_are_left_out() -> None:
    # Three questions were queued before any answer, so replies got higher numbers.
    history = [
        msg(1, "user", "q1", "r1"),
        msg(2, "user", "q2", "r2"),
        msg(3, "user", "q3", "r3"),
        msg(4, "assistant", "a1", "r1"),
        msg(5, "assistant", "a2", "r2"),
    ]
    seen = turns_before(history, "r3", user_seq=3)
    assert [m.content for m in seen] == ["q1", "a1", "q2", "a2", "q3"]
    assert [m.content for m in turns_before(history, "r2", user_seq=2)] == ["q1", "a1", "q2"]


def test_a_previous_attempts_reply_to_this_run_is_not_context() -> None:
    history = [msg(1, "user", "q1", "r1"), msg(2, "assistant", "partial", "r1")]
    assert [m.content for m in turns_before(history, "r1", user_seq=1)] == ["q1"]


def test_budget_keeps_the_newest_messages_and_the_system_prompt() -> None:
    history = [msg(i, "user" if i % 2 else "assistant", "x" * 400, f"r{i}") for i in range(1, 11)]
    budget = estimate_tokens("be brief") + 3 * estimate_tokens("x" * 400)
    context = build_context("be brief", history, budget)
    assert context[0].role == "system"
    assert len(context) == 4
    assert [m.role for m in context[1:]] == ["assistant", "user", "assistant"]


def test_an_oversized_last_message_is_truncated_not_dropped() -> None:
    context = build_context("", [msg(1, "user", "y" * 10_000, "r1")], budget_tokens=100)
    assert len(context) == 1
    assert 0 < len(context[0].content) < 10_000
    assert context[0].content.endswith("y")
