"""Wake-ups for blocked stream readers, from one Redis pub/sub subscription per process.

A blocking XREAD per reader holds a connection for as long as it waits: with hundreds of
clients waiting on their runs, the pool runs dry and every other command queues behind them.
Instead every append publishes the stream's name on one channel; this process keeps one
subscription and wakes its local readers, which then read without blocking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from redis.asyncio import Redis

_log = logging.getLogger("soma.cache.redis")
_RETRY_S = 0.5
END_MARK = "\n"
"""No stream name contains a newline: `name\n` announces the end of `name`."""


class StreamNotifier:
    """`waiter(stream)` before reading; the event is set by the next append to it."""

    def __init__(self, client: Redis, channel: str) -> None:
        self._client = client
        self.channel = channel
        self._waiters: dict[str, asyncio.Event] = {}
        self._counts: dict[str, int] = {}
        """Keys: a stream, or `ended(stream)` for who waits only for its end."""
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    @property
    def waiting(self) -> int:
        """Readers waiting for an append (none of them holds a connection)."""
        return sum(self._counts.values())

    @staticmethod
    def ended(stream: str) -> str:
        """What a stream's end publishes (an append publishes the bare name)."""
        return stream + END_MARK

    @contextlib.asynccontextmanager
    async def watching(self, stream: str, *, end: bool = False) -> AsyncIterator[asyncio.Event]:
        """An event set by the next append to `stream`, or with `end` by its end only (and
        whenever notifications were lost)."""
        stream = self.ended(stream) if end else stream
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="redis-stream-notifier")
        await self._subscribed.wait()
        event = self._waiters.get(stream)
        if event is None:
            event = self._waiters[stream] = asyncio.Event()
        self._counts[stream] = self._counts.get(stream, 0) + 1
        try:
            yield event
        finally:
            left = self._counts[stream] - 1
            if left:
                self._counts[stream] = left
            else:
                del self._counts[stream]
                if self._waiters.get(stream) is event:
                    del self._waiters[stream]

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _wake(self, stream: str) -> None:
        event = self._waiters.pop(stream, None)
        if event is not None:
            event.set()
        if stream.endswith(END_MARK):
            self._wake(stream[: -len(END_MARK)])  # an end is news to every reader too

    def _wake_all(self) -> None:
        for stream in list(self._waiters):
            self._wake(stream)

    async def _listen(self) -> None:
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._subscribed.set()
                # Appends may have happened while nobody listened: everyone reads again.
                self._wake_all()
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message.get("type") == "message":
                        data = message["data"]
                        self._wake(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # readers still time out into the database fallback
                _log.warning("stream notifications lost, resubscribing: %s", exc)
                self._wake_all()
                await asyncio.sleep(_RETRY_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
