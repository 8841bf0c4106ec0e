"""Script calls from many coroutines sent to Redis together: one pipeline per batch.

Every run appends its events on its own; under load dozens of runs append within one
event-loop iteration. Sending each as its own round trip costs the client far more CPU than
Redis spends on the scripts, so calls made while a batch is on the wire wait for the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError


@dataclass(frozen=True, slots=True)
class ScriptCall:
    script: AsyncScript
    keys: Sequence[str]
    args: Sequence[Any]


class ScriptBatcher:
    """At most one pipeline in flight; replies (errors as values) go back to each caller."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._pending: list[tuple[Sequence[ScriptCall], asyncio.Future[list[Any]]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def run(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """The calls' replies in order; a connection failure is raised for the whole batch."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((calls, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="redis-script-batch")
        return await future

    async def _flush(self) -> None:
        batch: list[tuple[Sequence[ScriptCall], asyncio.Future[list[Any]]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    replies = await self._execute([call for calls, _ in batch for call in calls])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                start = 0
                for calls, future in batch:
                    if not future.done():
                        future.set_result(replies[start : start + len(calls)])
                    start += len(calls)
                batch = []
        finally:
            # Cancelled (shutdown): nobody may wait forever on a batch that will not be sent.
            for _, future in batch + self._pending:
                if not future.done():
                    future.cancel()
            self._pending = []
            self._flusher = None

    async def _execute(self, calls: list[ScriptCall]) -> list[Any]:
        # EVALSHA by hand: a pipeline given Script objects asks SCRIPT EXISTS first, a second
        # round trip per batch; a script Redis lost (restart, flush) is loaded on NOSCRIPT.
        async with self._client.pipeline(transaction=False) as pipe:
            for call in calls:
                pipe.execute_command("EVALSHA", call.script.sha, len(call.keys), *call.keys,
                                     *call.args)  # fmt: skip
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        for index, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                call = calls[index]
                try:
                    replies[index] = await call.script(keys=list(call.keys), args=list(call.args))
                except ResponseError as exc:
                    replies[index] = exc
        return replies
