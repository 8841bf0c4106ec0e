"""The recovery service re-drives runs whose request was lost or whose worker died."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from soma.core.clock import utcnow
from soma.observability.metrics import Metrics
from soma.runs.events import EventType, first_id
from soma.runtime.recovery import RecoveryService
from tests.support.runtime_stack import (
    Chat,
    RuntimeStack,
    running_stack,
    runtime_settings,
    wait_for,
)
from tests.support.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.integration

DONE = {"completed", "failed", "cancelled"}
MAX_ATTEMPTS = 2


@pytest.fixture
async def stack(
    tmp_path: Path, database_url: str, upstream: ScriptedLLM
) -> AsyncIterator[RuntimeStack]:
    # requeue_after_s stays long here: queued runs are left alone unless a test says otherwise.
    settings = runtime_settings(
        tmp_path, database_url, upstream.base_url, runtime={"max_attempts": MAX_ATTEMPTS}
    )
    async with running_stack(settings) as running:
        yield running


def recovery_with(stack: RuntimeStack, **runtime: float) -> RecoveryService:
    """Another recovery service over the same database, with its own settings and metrics."""
    settings = stack.settings.runtime.model_copy(update=runtime)
    return RecoveryService(
        stack.database, stack.run_store, stack.cache.streams, settings, Metrics(), False
    )


def recovered(stack: RuntimeStack, action: str) -> float:
    value = stack.metrics.registry.get_sample_value("soma_runs_recovered_total", {"action": action})
    return value or 0.0


async def die_while_running(stack: RuntimeStack, chat: Chat, run_id: str, attempt: int) -> None:
    """Make the run look like a worker claimed it for `attempt`, started, and vanished."""
    past = utcnow() - timedelta(seconds=5)
    await stack.update_run(
        run_id,
        status="running",
        attempt=attempt,
        lease_owner="dead-worker",
        lease_expires_at=past,
        started_at=past,
    )
    async with stack.database.transaction() as uow:
        await uow.run_events.append(
            chat.tenant_id, run_id, EventType.STARTED, {"attempt": attempt}, seq=first_id(attempt)
        )


async def test_a_queued_run_whose_request_was_lost_is_requested_again(
    stack: RuntimeStack,
) -> None:
    chat = await stack.conversation()
    run_id = (await stack.accept(chat, "is anyone there", lose_request=True)).run.id
    # Not yet: the request may still be on its way for requeue_after_s.
    assert await stack.recovery.sweep() == 0
    eager = recovery_with(stack, requeue_after_s=0.2)

    async def swept() -> int | None:
        return await eager.sweep() or None

    assert await wait_for(swept, "the lost request to be re-sent") == 1
    run = await stack.wait_run(chat, run_id, DONE)
    assert (run.status, run.attempt) == ("completed", 1)
    replies = [m for m in await stack.messages(chat) if m.role == "assistant"]
    assert [(m.run_id, m.content) for m in replies] == [(run_id, "You said: is anyone there")]
    assert [e.type for e in await stack.events(chat, run_id)] == [
        EventType.QUEUED,
        EventType.STARTED,
        EventType.MESSAGE_COMPLETED,
        EventType.COMPLETED,
    ]
    assert await eager.sweep() == 0


async def test_a_running_run_whose_lease_expired_is_run_again(stack: RuntimeStack) -> None:
    chat = await stack.conversation()
    run_id = (await stack.accept(chat, "again please", lose_request=True)).run.id
    await die_while_running(stack, chat, run_id, attempt=1)
    assert await stack.recovery.sweep() == 1
    run = await stack.wait_run(chat, run_id, DONE)
    assert (run.status, run.attempt) == ("completed", 2)
    assert run.lease_owner is None
    events = await stack.events(chat, run_id)
    assert [e.type for e in events] == [
        EventType.QUEUED,
        EventType.STARTED,
        EventType.STARTED,
        EventType.MESSAGE_COMPLETED,
        EventType.COMPLETED,
    ]
    # The second attempt numbers its events above everything the dead one could have written.
    assert [e.seq for e in events[:3]] == [first_id(0), first_id(1), first_id(2)]
    assert first_id(2) < events[3].seq < events[4].seq < first_id(3)
    assert events[2].data == {"attempt": 2}
    replies = [m for m in await stack.messages(chat) if m.role == "assistant"]
    assert [m.content for m in replies] == ["You said: again please"]
    assert recovered(stack, "requeued") == 1


async def test_a_run_at_max_attempts_with_an_expired_lease_is_given_up(
    stack: RuntimeStack, upstream: ScriptedLLM
) -> None:
    chat = await stack.conversation()
    doomed = (await stack.accept(chat, "doomed", lose_request=True)).run.id
    # The next run of the session waits for the doomed one; only recovery can free it.
    waiting = (await stack.accept(chat, "next", lose_request=True)).run.id
    await die_while_running(stack, chat, doomed, attempt=MAX_ATTEMPTS)
    assert await stack.recovery.sweep() == 1
    run = await stack.run(chat, doomed)
    assert run.status == "failed"
    assert run.error is not None and "gave up" in run.error
    assert run.finished_at is not None and run.lease_owner is None
    events = await stack.events(chat, doomed)
    assert [e.type for e in events] == [EventType.QUEUED, EventType.STARTED, EventType.FAILED]
    assert events[-1].data == {"error": run.error}
    assert recovered(stack, "failed") == 1
    done = await stack.wait_run(chat, waiting, DONE)
    assert done.status == "completed", done.error
    assert [(m.role, m.run_id) for m in await stack.messages(chat)] == [
        ("user", doomed),
        ("user", waiting),
        ("assistant", waiting),
    ]
    assert [r.last_user_content for r in upstream.chat_requests()] == ["next"]


async def test_a_run_handed_back_max_attempts_times_fails_on_the_next_claim(
    stack: RuntimeStack, upstream: ScriptedLLM
) -> None:
    chat = await stack.conversation()
    run_id = (await stack.accept(chat, "once more", lose_request=True)).run.id
    await stack.update_run(run_id, attempt=MAX_ATTEMPTS)
    await stack.deliver(chat, run_id)
    run = await stack.wait_run(chat, run_id, DONE)
    assert run.status == "failed"
    assert run.error == f"gave up after {MAX_ATTEMPTS} attempts"
    events = await stack.events(chat, run_id)
    assert [e.type for e in events] == [EventType.QUEUED, EventType.FAILED]
    assert [m.role for m in await stack.messages(chat)] == ["user"]
    assert upstream.chat_requests() == []


async def test_orphans_at_start_re_drives_every_active_run(
    tmp_path: Path, database_url: str, upstream: ScriptedLLM
) -> None:
    settings = runtime_settings(tmp_path, database_url, upstream.base_url)
    async with running_stack(settings, orphans_at_start=True, start_core=False) as stack:
        await stack.start(stack.database_service, stack.cache)
        # What a previous process left behind, all with live leases or fresh requests.
        queued_chat = await stack.conversation()
        queued = (await stack.accept(queued_chat, "queued", lose_request=True)).run.id
        running_chat = await stack.conversation()
        running = (await stack.accept(running_chat, "running", lose_request=True)).run.id
        cancelling_chat = await stack.conversation()
        cancelling = (await stack.accept(cancelling_chat, "stop", lose_request=True)).run.id
        later = utcnow() + timedelta(minutes=5)
        for run_id, status in ((running, "running"), (cancelling, "cancelling")):
            await stack.update_run(
                run_id, status=status, attempt=1, lease_owner="previous", lease_expires_at=later
            )
        # A regular sweep sees nothing stalled: the leases look alive.
        assert await recovery_with(stack).sweep() == 0

        await stack.start(stack.bus, stack.llm, stack.relay, stack.worker, stack.recovery)
        for chat, run_id, attempt in ((queued_chat, queued, 1), (running_chat, running, 2)):
            run = await stack.wait_run(chat, run_id, DONE)
            assert (run.status, run.attempt) == ("completed", attempt), run.error
            replies = [m for m in await stack.messages(chat) if m.role == "assistant"]
            assert [m.run_id for m in replies] == [run_id]
        run = await stack.run(cancelling_chat, cancelling)
        assert (run.status, run.lease_owner) == ("cancelled", None)
        events = await stack.events(cancelling_chat, cancelling)
        assert [e.type for e in events] == [EventType.QUEUED, EventType.CANCELLED]
        assert [m.role for m in await stack.messages(cancelling_chat)] == ["user"]
        assert (recovered(stack, "requeued"), recovered(stack, "cancelled")) == (2, 1)
        assert sorted(r.last_user_content for r in upstream.chat_requests()) == [
            "queued",
            "running",
        ]
