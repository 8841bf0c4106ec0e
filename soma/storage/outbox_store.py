"""The relay's view of the outbox table (implements `soma.bus.outbox.OutboxStore`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from soma.bus.outbox import OutboxRecord
from soma.core.clock import utcnow
from soma.storage.database import Database
from soma.storage.engine import dedicated_engine, is_postgres

log = logging.getLogger(__name__)

CHANNEL = "soma_outbox"
RELAY_LOCK_KEY = 0x736F_6D61_7265_6C61
"""pg advisory lock key ("somarela") held by the one relay replica."""
_ID_CHUNK = 1000
_PRUNE_BATCH = 5000
_PING_INTERVAL_S = 30.0
_RECONNECT_DELAY_S = 1.0


class OutboxRows(Protocol):
    """The hot half of the outbox (read pending, mark sent), on the run store's connections."""

    async def fetch_outbox(self, limit: int) -> list[OutboxRecord]: ...

    async def count_outbox(self) -> int: ...

    async def prune_outbox(self, sent_before: datetime, limit: int) -> int:
        """Delete up to `limit` rows sent before `sent_before`, oldest first; how many."""
        ...

    async def mark_outbox_sent(self, ids: Sequence[int], at: datetime) -> None: ...


class SqlOutboxStore:
    """Reads, marks and prunes outbox rows; wakes on local commits and, on PG, on NOTIFY."""

    def __init__(self, database: Database, rows: OutboxRows) -> None:
        self._database = database
        self._rows = rows
        self._engine = database.engine
        self._signal = database.outbox_signal
        self._postgres = is_postgres(self._engine)
        self._dedicated: AsyncEngine | None = None
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """On PostgreSQL, LISTEN on a dedicated connection (kept alive in the background)."""
        if not self._postgres or self._listener is not None:
            return
        self._dedicated = dedicated_engine(self._engine)
        first = await self._listen()
        self._listener = asyncio.create_task(self._keep_listening(first), name="outbox-listen")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        if self._dedicated is not None:
            await self._dedicated.dispose()
            self._dedicated = None

    async def fetch_pending(self, limit: int) -> list[OutboxRecord]:
        return await self._rows.fetch_outbox(limit)

    async def mark_sent(self, ids: Sequence[int]) -> None:
        for start in range(0, len(ids), _ID_CHUNK):
            await self._rows.mark_outbox_sent(ids[start : start + _ID_CHUNK], utcnow())

    async def prune_sent(self, older_than_s: float) -> int:
        """Delete rows sent before `older_than_s` ago, in batches; returns how many."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        total = 0
        while True:
            deleted = await self._rows.prune_outbox(cutoff, _PRUNE_BATCH)
            total += deleted
            if deleted < _PRUNE_BATCH:
                return total

    async def wait_for_new(self, timeout_s: float) -> None:
        await self._signal.wait(timeout_s)

    async def pending_count(self) -> int:
        return await self._rows.count_outbox()

    def leadership(self) -> AbstractAsyncContextManager[bool]:
        """PostgreSQL: a session advisory lock on a dedicated connection. SQLite: always True."""
        return self._leadership()

    @asynccontextmanager
    async def _leadership(self) -> AsyncIterator[bool]:
        if not self._postgres:
            yield True
            return
        engine = self._dedicated or dedicated_engine(self._engine)
        try:
            conn = await engine.connect()
        except Exception as exc:  # any failure means "not leader now"; the caller retries
            log.warning("outbox leadership: cannot connect: %s", _first_line(exc))
            yield False
            return
        held = False
        try:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            lock = text("SELECT pg_try_advisory_lock(:key)")
            held = bool((await conn.execute(lock, {"key": RELAY_LOCK_KEY})).scalar())
            driver = await _driver(conn)
            if held:
                driver.add_termination_listener(_lost_leadership)
            yield held
        finally:
            if held:
                driver.remove_termination_listener(_lost_leadership)
            # Ending the session releases the lock; no explicit unlock needed.
            await _close_quietly(conn)
            if engine is not self._dedicated:
                await engine.dispose()

    async def _listen(self) -> tuple[AsyncConnection, asyncio.Event]:
        assert self._dedicated is not None
        conn = await self._dedicated.connect()
        lost = asyncio.Event()
        try:
            driver = await _driver(conn)
            driver.add_termination_listener(lambda _connection: lost.set())
            await driver.add_listener(CHANNEL, self._on_notify)
        except BaseException:
            await conn.close()
            raise
        # Rows may have been added while nobody listened.
        self._signal.notify()
        return conn, lost

    def _on_notify(self, *_args: Any) -> None:
        self._signal.notify()

    async def _keep_listening(self, current: tuple[AsyncConnection, asyncio.Event] | None) -> None:
        while True:
            if current is None:
                try:
                    current = await self._listen()
                except Exception as exc:  # retried; the relay's polling covers the gap
                    log.warning("outbox listener: cannot reconnect: %s", _first_line(exc))
                    await asyncio.sleep(_RECONNECT_DELAY_S)
                    continue
            conn, lost = current
            try:
                # A closed socket is reported at once; a silently dead one by the ping.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), timeout=_PING_INTERVAL_S)
                if lost.is_set():
                    raise ConnectionError("listener connection closed")
                driver = await _driver(conn)
                await asyncio.wait_for(driver.execute("SELECT 1"), timeout=5)
            except asyncio.CancelledError:
                await _close_quietly(conn)
                raise
            except Exception as exc:  # a dead connection is replaced
                log.warning("outbox listener: connection lost: %s", _first_line(exc))
                await _close_quietly(conn)
                current = None
                self._signal.notify()


async def _driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under a SQLAlchemy one (for LISTEN and liveness callbacks)."""
    driver = (await conn.get_raw_connection()).driver_connection
    if driver is None:
        raise RuntimeError("connection has no driver connection")
    return driver


def _lost_leadership(_connection: Any) -> None:
    log.warning("outbox leadership: lock connection closed; another replica may take over")


async def _close_quietly(conn: AsyncConnection) -> None:
    try:
        await conn.close()
    except Exception as exc:  # the connection may already be broken
        log.debug("outbox listener: close failed: %s", _first_line(exc))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
