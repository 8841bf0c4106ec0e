"""Natural batching: calls that arrive while a batch is being written join the next one.

No timer and no added latency: an idle batcher writes a lone call at once; under load every
batch takes all that queued meanwhile, so concurrent accepts (or completions) share one
transaction and one commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741

Flush = Callable[[list[I]], Awaitable[Sequence[O | BaseException]]]


class Batcher(Generic[I, O]):
    """`submit` returns the item's own result (or raises its own error)."""

    def __init__(self, flush: Flush[I, O], *, max_batch: int, max_in_flight: int) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pending: list[tuple[I, asyncio.Future[O]]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: I) -> O:
        future: asyncio.Future[O] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._in_flight < self._max_in_flight:
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                try:
                    results = await self._flush([item for item, _ in batch])
                except BaseException as exc:
                    results = [exc] * len(batch)
                    if not isinstance(exc, Exception):
                        _settle(batch, results)
                        raise
                _settle(batch, results)
        finally:
            self._in_flight -= 1


def _settle(batch: list[tuple[I, asyncio.Future[O]]], results: Sequence[O | BaseException]) -> None:
    for (_, future), result in zip(batch, results, strict=True):
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
