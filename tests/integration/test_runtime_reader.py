"""`RunEventReader`: durable milestones merged with the live stream, each id once, in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from soma.runs.events import TERMINAL, EventType, RunEvent, stream_key
from soma.runs.reader import READ_BATCH, RunEventReader
from tests.support.runtime_stack import Chat, RuntimeStack, running_stack, runtime_settings
from tests.support.scripted_llm import ScriptedLLM, Text

pytestmark = pytest.mark.integration

DONE = {"completed", "failed", "cancelled"}
STREAM_MAXLEN = 10
READ_TIMEOUT_S = 15.0


@pytest.fixture
async def stack(
    tmp_path: Path, sqlite_database_url: str, upstream: ScriptedLLM
) -> AsyncIterator[RuntimeStack]:
    settings = runtime_settings(tmp_path, sqlite_database_url, upstream.base_url)
    async with running_stack(settings) as running:
        yield running


def reader_of(stack: RuntimeStack) -> RunEventReader:
    return RunEventReader(stack.run_store, stack.cache.streams, heartbeat_s=0.1)


async def read_all(stack: RuntimeStack, chat: Chat, run_id: str, after: int = 0) -> list[RunEvent]:
    """Everything the reader yields until it stops by itself (heartbeats left out)."""
    events: list[RunEvent] = []
    async with asyncio.timeout(READ_TIMEOUT_S):
        async for event in reader_of(stack).events(chat.tenant_id, run_id, after):
            if event is not None:
                events.append(event)
    return events


async def milestones(stack: RuntimeStack, chat: Chat, run_id: str) -> list[tuple[int, str]]:
    return [(e.seq, e.type) for e in await stack.events(chat, run_id)]


def assert_one_complete_run(events: list[RunEvent]) -> None:
    """Ids strictly increase, one terminal event closes it, deltas spell the final message."""
    ids = [e.id for e in events]
    assert ids == sorted(set(ids)), "an id was repeated or out of order"
    assert [e.type for e in events if e.type in TERMINAL] == [EventType.COMPLETED]
    assert events[-1].type == EventType.COMPLETED
    completed = [e for e in events if e.type == EventType.MESSAGE_COMPLETED]
    assert len(completed) == 1
    text = "".join(e.data["text"] for e in events if e.type == EventType.DELTA)
    assert text == completed[0].data["message"]["content"]


async def test_after_completion_each_stored_id_is_yielded_once_in_order(
    stack: RuntimeStack, upstream: ScriptedLLM
) -> None:
    upstream.script(Text("one two three four", chunks=4))
    chat = await stack.conversation()
    run_id = (await stack.accept(chat, "count")).run.id
    await stack.wait_run(chat, run_id, DONE)
    events = await read_all(stack, chat, run_id)
    assert_one_complete_run(events)
    assert [e.type for e in events] == [
        EventType.QUEUED,
        EventType.STARTED,
        *[EventType.DELTA] * 4,
        EventType.MESSAGE_COMPLETED,
        EventType.COMPLETED,
    ]
    stream = await stack.cache.streams.read(stream_key(run_id), 0, 1000)
    durable = await milestones(stack, chat, run_id)
    assert [e.id for e in events] == sorted({e.id for e in stream} | {seq for seq, _ in durable})
    # Resuming after an id yields exactly what follows it.
    assert await read_all(stack, chat, run_id, after=events[3].id) == events[4:]


async def test_a_live_reader_gets_every_event_once_as_it_happens(
    stack: RuntimeStack, upstream: ScriptedLLM
) -> None:
    upstream.script(Text("slowly but surely arriving", chunks=5, delay_s=0.1))
    chat = await stack.conversation()
    run_id = (await stack.accept(chat, "go")).run.id
    live = await read_all(stack, chat, run_id)
    assert_one_complete_run(live)
    assert [e.type for e in live].count(EventType.DELTA) == 5
    assert live == await read_all(stack, chat, run_id)


async def test_without_its_stream_a_finished_run_still_yields_every_milestone(
    stack: RuntimeStack,
) -> None:
    chat = await stack.conversation()
    run_id = (await stack.accept(chat, "remember this")).run.id
    await stack.wait_run(chat, run_id, DONE)
    await stack.cache.streams.delete(stream_key(run_id))
    events = await read_all(stack, chat, run_id)
    assert [(e.id, e.type) for e in events] == await milestones(stack, chat, run_id)
    assert [e.type for e in events] == [
        EventType.QUEUED,
        EventType.STARTED,
        EventType.MESSAGE_COMPLETED,
        EventType.COMPLETED,
    ]
    assert events[2].data["message"]["content"] == "You said: remember this"
    assert await read_all(stack, chat, run_id, after=events[1].id) == events[2:]


async def test_a_trimmed_stream_is_filled_in_from_the_milestones(
    tmp_path: Path, sqlite_database_url: str, upstream: ScriptedLLM
) -> None:
    settings = runtime_settings(tmp_path, sqlite_database_url, upstream.base_url)
    small = settings.cache.model_copy(update={"stream_maxlen": STREAM_MAXLEN})
    upstream.script(Text("abcdefghijklmnopqrst", chunks=20))
    async with running_stack(settings.model_copy(update={"cache": small})) as stack:
        chat = await stack.conversation()
        run_id = (await stack.accept(chat, "alphabet")).run.id
        await stack.wait_run(chat, run_id, DONE)
        kept = await stack.cache.streams.read(stream_key(run_id), 0, 1000)
        assert len(kept) == STREAM_MAXLEN  # the head (run.queued, run.started, deltas) is gone
        events = await read_all(stack, chat, run_id)
        durable = await milestones(stack, chat, run_id)
    ids = [e.id for e in events]
    assert ids == sorted(set(ids)), "an id was repeated or out of order"
    # Every milestone, plus what the stream still had (its surviving deltas), nothing else.
    assert ids == sorted({seq for seq, _ in durable} | {e.id for e in kept})
    assert [e.type for e in events[:2]] == [EventType.QUEUED, EventType.STARTED]
    assert [e.type for e in events[-2:]] == [EventType.MESSAGE_COMPLETED, EventType.COMPLETED]
    assert [e.type for e in events].count(EventType.COMPLETED) == 1
    assert events[-2].data["message"]["content"] == "abcdefghijklmnopqrst"


async def test_a_reply_longer_than_one_read_batch_yields_every_delta_after_completion(
    stack: RuntimeStack, upstream: ScriptedLLM
) -> None:
    pieces = READ_BATCH + 100
    upstream.script(Text("x" * pieces, chunks=pieces))
    chat = await stack.conversation()
    run_id = (await stack.accept(chat, "a long one")).run.id
    await stack.wait_run(chat, run_id, DONE)
    events = await read_all(stack, chat, run_id)
    stored = await stack.cache.streams.read(stream_key(run_id), 0, 10 * pieces)
    assert len([e for e in stored if b'"message.delta"' in e.data]) == pieces
    # Every delta the stream holds must be yielded, not just the first read batch of them.
    assert [e.type for e in events].count(EventType.DELTA) == pieces
    assert_one_complete_run(events)
