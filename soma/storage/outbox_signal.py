"""In-process wake-up for the outbox relay, set after a commit that added outbox rows."""

from __future__ import annotations

import asyncio


class OutboxSignal:
    """A level-triggered flag: `wait` returns at once if set since the last `wait` returned."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await self._event.wait()
        except TimeoutError:
            return
        finally:
            # Consumed here: the caller reads the outbox next, which covers what set it.
            self._event.clear()
