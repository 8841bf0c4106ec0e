"""Per-key serial, cross-key concurrent execution: no head-of-line blocking between keys."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class KeyedExecutor(Generic[T]):
    """Runs items of one key in submission order, at most `concurrency` keys at a time."""

    def __init__(self, concurrency: int, run: Callable[[T], Awaitable[None]]) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._concurrency = concurrency
        self._run = run
        self._queues: dict[str, deque[T]] = {}
        self._waiting_keys: deque[str] = deque()
        self._workers: set[asyncio.Task[None]] = set()
        self._active = 0
        self._current: dict[asyncio.Task[None], tuple[T, asyncio.Task[None]]] = {}

    def submit(self, key: str, item: T) -> None:
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(item)
            return
        self._queues[key] = deque([item])
        if self._active < self._concurrency:
            self._active += 1
            task = asyncio.create_task(self._work(key), name=f"keyed:{key}")
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)
        else:
            self._waiting_keys.append(key)

    @property
    def active_keys(self) -> int:
        return self._active

    def running(self) -> list[T]:
        """Items whose `run` is executing right now."""
        return [item for item, _ in self._current.values()]

    def drop(self, predicate: Callable[[T], bool]) -> int:
        """Forget queued items matching `predicate` and cancel their running `run`s."""
        dropped = 0
        for queue in self._queues.values():
            kept = [item for item in queue if not predicate(item)]
            dropped += len(queue) - len(kept)
            queue.clear()
            queue.extend(kept)
        for item, child in self._current.values():
            if predicate(item):
                child.cancel()
                dropped += 1
        return dropped

    async def _work(self, key: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            while True:
                queue = self._queues[key]
                while queue:
                    item = queue.popleft()
                    # Its own task, so `drop` can cancel one item without ending this worker.
                    child = asyncio.create_task(self._guarded(key, item))
                    self._current[task] = (item, child)
                    try:
                        await child
                    except asyncio.CancelledError:
                        if task.cancelling():
                            raise
                    finally:
                        self._current.pop(task, None)
                del self._queues[key]
                if not self._waiting_keys:
                    break
                key = self._waiting_keys.popleft()
        finally:
            self._active -= 1

    async def _guarded(self, key: str, item: T) -> None:
        try:
            await self._run(item)
        except Exception:
            # `run` owns error handling; a bug there must not stall the key.
            log.exception("bus: unexpected error while running an item of key %r", key)

    async def cancel(self) -> None:
        """Cancel all work and forget queued items (they were never acked)."""
        workers = list(self._workers)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._queues.clear()
        self._waiting_keys.clear()
        self._current.clear()
        self._active = 0
