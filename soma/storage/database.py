"""The database: units of work over the engine, with a commit hook that wakes the outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar

from sqlalchemy.ext.asyncio import AsyncEngine

from soma.storage.engine import SQLITE_BEGIN_OPTION, is_sqlite
from soma.storage.metrics import StorageMetrics
from soma.storage.outbox_signal import OutboxSignal
from soma.storage.uow import UnitOfWork


class Database:
    """Holds the engine; `transaction()` for writes, `read()` for reads."""

    def __init__(
        self,
        engine: AsyncEngine,
        metrics: StorageMetrics,
        outbox_signal: OutboxSignal | None = None,
        exclusive: Callable[[], AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        self.engine = engine
        self._exclusive = exclusive or contextlib.nullcontext
        self.outbox_signal = outbox_signal or OutboxSignal()
        self._metrics = metrics
        self._sqlite = is_sqlite(engine)
        if self._sqlite:
            # BEGIN IMMEDIATE takes the write lock up front, so a transaction that reads and
            # then writes never fails with SQLITE_BUSY halfway; the asyncio lock keeps this
            # process's writers queued here instead of in SQLite's sleeping busy handler.
            self._writer = engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            self._reader = engine
        else:
            self._writer = engine
            self._reader = engine.execution_options(postgresql_readonly=True)
        self._write_lock = asyncio.Lock()
        self._writing: ContextVar[bool] = ContextVar(f"soma_db_writing_{id(self)}", default=False)

    def transaction(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """Commit when the block succeeds, roll back when it raises.

        On SQLite the block holds the one write lock: keep it short, never nest it.
        """
        return self._transaction()

    def read(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """A unit of work for reads: read-only on PostgreSQL; on SQLite writes are rolled back."""
        return self._read()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[UnitOfWork]:
        started = time.perf_counter()
        committed = False
        uow: UnitOfWork | None = None
        if self._sqlite and self._writing.get():
            # asyncio.Lock is not reentrant: waiting here would deadlock this task forever.
            raise RuntimeError("a SQLite write transaction is already open in this task")
        lock = self._write_lock if self._sqlite else contextlib.nullcontext()
        token = self._writing.set(True)
        try:
            # The run store's writer thread steps aside, so this connection never starves.
            async with lock, self._exclusive(), self._writer.begin() as conn:
                uow = UnitOfWork(conn)
                yield uow
            committed = True
        finally:
            self._writing.reset(token)
            (self._metrics.commits if committed else self._metrics.rollbacks).inc()
            self._metrics.transaction_seconds.observe(time.perf_counter() - started)
        if uow is not None and uow.outbox.added:
            self.outbox_signal.notify()

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[UnitOfWork]:
        async with self._reader.connect() as conn:
            yield UnitOfWork(conn)
