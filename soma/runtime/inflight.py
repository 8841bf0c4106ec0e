"""The runs a worker executes: one loop renews all their leases, one watches for cancels.

A task per run for each would cost more than an instant turn itself; instead each turn
registers here and is interrupted (its task cancelled with a reason) when its lease is lost
or its cancel flag appears.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from soma.core.clock import utcnow
from soma.runs.events import cancel_key
from soma.runs.port import Flags
from soma.runs.store import RunStore

_log = logging.getLogger("soma.runtime")
CANCEL_POLL_S = 0.2


@dataclass(slots=True)
class Handle:
    """A registered run; `stop_reason` says why it should stop.

    Only the model call is interrupted (its task cancelled): once a reply is being written,
    the write's own checks decide (a cancelled run no longer matches `running`).
    """

    run_id: str
    task: asyncio.Task[None]
    stop_reason: str | None = None
    interruptible: bool = False
    interrupted: bool = False
    """True once this handle cancelled the task (a cancel from elsewhere is a shutdown)."""

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            if self.interruptible:
                self.interrupt()

    def interrupt(self) -> None:
        self.interrupted = True
        self.task.cancel()


class InFlight:
    """Supervises the leased runs of one owner; start it before registering."""

    def __init__(self, store: RunStore, flags: Flags, owner: str, lease_s: float) -> None:
        self._store = store
        self._flags = flags
        self._owner = owner
        self._lease_s = lease_s
        self._runs: dict[str, Handle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def __len__(self) -> int:
        return len(self._runs)

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._renew_loop(), name="lease-keeper"),
                asyncio.create_task(self._cancel_loop(), name="cancel-watcher"),
            ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def register(self, run_id: str, task: asyncio.Task[None]) -> Handle:
        handle = Handle(run_id, task)
        self._runs[run_id] = handle
        return handle

    def unregister(self, handle: Handle) -> None:
        if self._runs.get(handle.run_id) is handle:
            del self._runs[handle.run_id]

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            held = dict(self._runs)
            if not held:
                continue
            until = utcnow() + timedelta(seconds=self._lease_s)
            try:
                ours = await self._store.renew_leases(self._owner, held.keys(), until)
            except Exception as exc:  # the next round tries again, well within the lease
                _log.warning("lease renewal failed: %s", exc)
                continue
            for run_id, handle in held.items():
                if run_id not in ours and self._runs.get(run_id) is handle:
                    _log.warning("lost the lease of run %s: abandoning this attempt", run_id)
                    handle.stop("lost")

    async def _cancel_loop(self) -> None:
        while True:
            await asyncio.sleep(CANCEL_POLL_S)
            for run_id, handle in list(self._runs.items()):
                try:
                    flagged = await self._flags.get(cancel_key(run_id)) is not None
                except Exception as exc:  # cancel is best effort until the flag is readable
                    _log.warning("cannot read the cancel flag of run %s: %s", run_id, exc)
                    break
                if flagged:
                    handle.stop("cancel")
