"""KeyedExecutor: serial per key, concurrent across keys, bounded number of active keys."""

from __future__ import annotations

import asyncio
import random

from soma.bus.keyed import KeyedExecutor


async def test_order_per_key_with_concurrency_across_keys() -> None:
    seen: dict[str, list[int]] = {}
    active = 0
    peak = 0
    finished = asyncio.Event()
    total = 10 * 20

    async def run(item: tuple[str, int]) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(random.random() / 500)
        active -= 1
        seen.setdefault(item[0], []).append(item[1])
        if sum(map(len, seen.values())) == total:
            finished.set()

    executor: KeyedExecutor[tuple[str, int]] = KeyedExecutor(4, run)
    for seq in range(20):
        for k in range(10):
            executor.submit(f"k{k}", (f"k{k}", seq))
    await asyncio.wait_for(finished.wait(), 10)
    assert seen == {f"k{k}": list(range(20)) for k in range(10)}
    assert 1 < peak <= 4


async def test_a_blocked_key_does_not_block_other_keys() -> None:
    release = asyncio.Event()
    done: list[str] = []
    fast_done = asyncio.Event()

    async def run(item: str) -> None:
        if item == "slow":
            await release.wait()
        done.append(item)
        if done.count("fast") == 5:
            fast_done.set()

    executor: KeyedExecutor[str] = KeyedExecutor(2, run)
    executor.submit("A", "slow")
    for _ in range(5):
        executor.submit("B", "fast")
    await asyncio.wait_for(fast_done.wait(), 10)
    assert done == ["fast"] * 5
    assert executor.running() == ["slow"]
    release.set()
    while "slow" not in done:
        await asyncio.sleep(0.001)
    assert executor.active_keys == 0


async def test_keys_beyond_the_limit_wait_for_a_free_slot() -> None:
    order: list[str] = []
    all_done = asyncio.Event()

    async def run(item: str) -> None:
        await asyncio.sleep(0)
        order.append(item)
        if len(order) == 6:
            all_done.set()

    executor: KeyedExecutor[str] = KeyedExecutor(1, run)
    for key in "abc":
        executor.submit(key, key + "1")
        executor.submit(key, key + "2")
    assert executor.active_keys == 1
    await asyncio.wait_for(all_done.wait(), 10)
    assert order == ["a1", "a2", "b1", "b2", "c1", "c2"]


async def test_cancel_drops_queued_items() -> None:
    started = asyncio.Event()
    ran: list[int] = []

    async def run(item: int) -> None:
        started.set()
        await asyncio.sleep(60)
        ran.append(item)

    executor: KeyedExecutor[int] = KeyedExecutor(1, run)
    executor.submit("k", 1)
    executor.submit("k", 2)
    await started.wait()
    await executor.cancel()
    assert ran == []
    assert executor.active_keys == 0
    assert executor.running() == []


async def test_drop_cancels_matching_items_and_the_key_goes_on() -> None:
    started = asyncio.Event()
    ran: list[str] = []
    finished = asyncio.Event()

    async def run(item: str) -> None:
        if item.startswith("old"):
            started.set()
            await asyncio.sleep(60)
        ran.append(item)
        if item == "new-2":
            finished.set()

    executor: KeyedExecutor[str] = KeyedExecutor(1, run)
    for item in ("old-1", "old-2", "new-1"):
        executor.submit("k", item)
    executor.submit("other", "new-2")
    await started.wait()
    assert executor.drop(lambda item: item.startswith("old")) == 2
    await asyncio.wait_for(finished.wait(), 10)
    assert ran == ["new-1", "new-2"]
