"""Small real services for orchestrator tests: they record what the lifecycle asks of them."""

from __future__ import annotations

import asyncio

from soma.core import Health, HealthStatus


class RecordingService:
    """Appends `start:<name>` / `drain:<name>` / `stop:<name>` to a shared journal."""

    def __init__(
        self,
        name: str,
        journal: list[str],
        fail_starts: int = 0,
        health_status: HealthStatus = HealthStatus.HEALTHY,
        stop_delay_s: float = 0.0,
    ) -> None:
        self._name = name
        self.journal = journal
        self.fail_starts = fail_starts
        self.health_status = health_status
        self.stop_delay_s = stop_delay_s
        self.running = False

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        if self.fail_starts > 0:
            self.fail_starts -= 1
            self.journal.append(f"failed:{self._name}")
            raise ConnectionError(f"{self._name} backend refused the connection")
        self.running = True
        self.journal.append(f"start:{self._name}")

    async def drain(self) -> None:
        self.journal.append(f"drain:{self._name}")

    async def stop(self) -> None:
        if self.stop_delay_s:
            await asyncio.sleep(self.stop_delay_s)
        self.running = False
        self.journal.append(f"stop:{self._name}")

    async def health(self) -> Health:
        detail = "" if self.health_status == HealthStatus.HEALTHY else "probe says so"
        return Health(self.health_status, detail)
