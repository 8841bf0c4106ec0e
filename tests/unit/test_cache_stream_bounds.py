"""In-process run streams stay bounded: a grace after `finish`, and a byte cap with eviction."""

from __future__ import annotations

import tracemalloc
from collections import Counter

import orjson

from soma.cache.memory_streams import ENTRY_OVERHEAD_BYTES, MemoryRunStreams

ENTRY = 1000 - ENTRY_OVERHEAD_BYTES
"""Data size that makes one entry cost exactly 1000 bytes."""


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bounded(clock: ManualClock, max_bytes: int = 10**9, maxlen: int = 100) -> MemoryRunStreams:
    return MemoryRunStreams(maxlen, ttl_s=3600, clock=clock, grace_s=30, max_bytes=max_bytes)


async def ids(streams: MemoryRunStreams, stream: str) -> list[int]:
    return [e.id for e in await streams.read(stream, 0, limit=1000)]


async def test_a_finished_stream_goes_after_the_grace_and_others_stay() -> None:
    clock = ManualClock()
    streams = bounded(clock)
    for name in ("done", "running"):
        await streams.append(name, b"delta", 1)
        await streams.append(name, b"terminal", 2)
    await streams.finish("done")
    clock.now += 29
    assert await ids(streams, "done") == [1, 2]
    clock.now += 1
    assert await ids(streams, "done") == []
    assert await streams.last_id("done") == 0
    assert await ids(streams, "running") == [1, 2]
    assert streams.stream_count == 1


async def test_a_late_append_does_not_extend_a_finished_stream() -> None:
    clock = ManualClock()
    streams = bounded(clock)
    await streams.append("run", b"terminal", 5)
    await streams.finish("run")
    await streams.finish("run")  # a second call changes nothing
    clock.now += 20
    await streams.append("run", b"straggler", 6)
    clock.now += 10
    assert await ids(streams, "run") == []
    await streams.finish("never-written")  # nothing to finish: no error, nothing created
    assert streams.stream_count == 0


async def test_expired_streams_are_swept_and_their_bytes_released() -> None:
    clock = ManualClock()
    streams = bounded(clock, maxlen=3)
    for i in range(1, 6):
        await streams.append("trimmed", b"x" * ENTRY, i)
    assert streams.total_bytes == 3 * 1000  # maxlen trimming releases what it drops
    await streams.finish("trimmed")
    clock.now += 31
    await streams.append("other", b"x" * ENTRY)  # a write runs the once-a-second sweep
    assert streams.stream_count == 1
    assert streams.total_bytes == 1000
    await streams.delete("other")
    assert streams.total_bytes == 0


async def test_over_the_cap_the_oldest_finished_streams_go_first() -> None:
    clock = ManualClock()
    evicted: Counter[str] = Counter()
    streams = bounded(clock, max_bytes=5000)
    streams.on_evict = lambda reason: evicted.update([reason])
    for name in ("live-old", "done-old", "done-new", "live-new"):
        await streams.append(name, b"x" * ENTRY)
    await streams.finish("done-new")
    await streams.finish("done-old")  # finish order, not creation order, decides
    await streams.append("live-new", b"x" * ENTRY)
    assert streams.total_bytes == 5000
    await streams.append("incoming", b"x" * ENTRY)
    assert await ids(streams, "done-new") == []
    assert await ids(streams, "done-old") == [1]
    assert streams.total_bytes == 5000
    await streams.append("incoming", b"x" * ENTRY)
    assert await ids(streams, "done-old") == []
    assert await ids(streams, "live-old") == [1]
    await streams.append("incoming", b"x" * ENTRY)
    # No finished stream is left: the oldest unfinished one goes next.
    assert await ids(streams, "live-old") == []
    assert await ids(streams, "live-new") == [1, 2]
    assert await ids(streams, "incoming") == [1, 2, 3]
    assert evicted == {"finished_cap": 2, "live_cap": 1}
    assert streams.total_bytes <= 5000


async def test_one_stream_over_the_cap_keeps_its_newest_entries() -> None:
    streams = bounded(ManualClock(), max_bytes=3500)
    for i in range(1, 8):
        await streams.append("huge", b"x" * ENTRY, i)
    assert await ids(streams, "huge") == [5, 6, 7]
    assert streams.total_bytes == 3000


async def test_an_evicted_live_stream_continues_with_its_next_id() -> None:
    streams = bounded(ManualClock(), max_bytes=2000)
    await streams.append("run", b"x" * ENTRY, 1_000_001)
    await streams.append("a", b"x" * ENTRY)
    await streams.append("b", b"x" * ENTRY)
    assert await ids(streams, "run") == []
    assert await streams.append("run", b"next", 1_000_002) == 1_000_002
    entries = await streams.read("run", 1_000_001)
    assert [(e.id, e.data) for e in entries] == [(1_000_002, b"next")]


async def test_entries_cost_their_size_not_the_encoders_buffer() -> None:
    # orjson returns each body inside a 4 KiB allocation; kept as is, a run's few events
    # cost ~25 KB (finding 5 of issue 10). Entries must hold right-sized copies.
    streams = bounded(ManualClock(), maxlen=10_000)
    sizes = 0
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(1, 2001):
            body = orjson.dumps({"type": "message.delta", "text": str(index)})
            sizes += len(body)
            await streams.append("run", body, index)
        del body
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 2000 * 400, f"{held / 2000:.0f} bytes per entry"
    assert streams.total_bytes == sizes + 2000 * ENTRY_OVERHEAD_BYTES
