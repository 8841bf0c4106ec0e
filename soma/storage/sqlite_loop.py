"""The run store's SQLite connection, driven from the event loop itself (no thread).

SQLite has one writer, and a hot-path write is a few microseconds of C: a thread in between
costs more than the work (a hop each way, and the two threads trading the GIL). So the writer
runs jobs right on the loop: every job submitted during one loop iteration joins one
transaction (group commit: one WAL commit for many accepts), each in its own savepoint so a
failing job rolls back alone. It never waits for the lock inside SQLite (that would stall
the loop): a busy database is retried a moment later. Checkpoints, the one slow part of WAL,
run in a thread on their own connection. Reads run on a second, read-only connection (WAL
readers never wait for the writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import Counter, Histogram

from soma.runs.store import StatementCounts
from soma.storage.audit_sql import register_chain_hash

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]

_log = logging.getLogger("soma.storage.sqlite")
MAX_BATCH = 512
BUSY_RETRY_S = 0.002
BUSY_RETRY_MAX_S = 0.1
CHECKPOINT_EVERY_S = 1.0
CHECKPOINT_BUSY_TIMEOUT_MS = 5_000


class SqliteMetrics:
    def __init__(self, registry: Any) -> None:
        self.batches = Counter(
            "soma_db_group_commits_total",
            "SQLite writer transactions (each commits every job that was waiting).",
            registry=registry,
        )
        self.busy = Counter(
            "soma_db_busy_retries_total",
            "Times the SQLite writer found the lock taken (by another connection) and retried.",
            registry=registry,
        )
        self.batch_size = Histogram(
            "soma_db_group_commit_jobs",
            "Jobs per SQLite writer transaction.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=registry,
        )


@dataclass(slots=True)
class _Queue:
    jobs: list[tuple[Job, asyncio.Future[Any]]] = field(default_factory=list)
    scheduled: bool = False
    paused: int = 0
    delay_s: float = BUSY_RETRY_S


class SqliteLoop:
    """One connection on the running loop; `write` enables group commit."""

    def __init__(self, path: Path, *, write: bool, metrics: SqliteMetrics | None = None) -> None:
        self._path = path
        self._write = write
        self._metrics = metrics
        self._conn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue = _Queue()
        self._checkpoints: asyncio.Task[None] | None = None
        self.counts = StatementCounts()

    async def start(self) -> None:
        if self._conn is not None:
            return
        self._loop = asyncio.get_running_loop()
        conn = sqlite3.connect(self._path, isolation_level=None)
        # Never wait inside SQLite for the lock: that would stop the whole event loop.
        conn.execute("PRAGMA busy_timeout = 0")
        if self._write:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            register_chain_hash(conn)
            self._checkpoints = asyncio.create_task(self._checkpoint_loop(), name="wal-checkpoint")
        else:
            conn.execute("PRAGMA query_only = ON")
        conn.set_trace_callback(self._trace)
        self._conn = conn

    async def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            await asyncio.gather(self._checkpoints, return_exceptions=True)
            self._checkpoints = None
        conn, self._conn = self._conn, None
        if conn is not None:
            for _, future in self._queue.jobs:
                if not future.done():
                    future.set_exception(RuntimeError("the database connection closed"))
            self._queue.jobs.clear()
            conn.close()

    async def run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection()
        if not self._write:
            self.counts.trips += 1
            return job(conn)
        assert self._loop is not None
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.jobs.append((job, future))
        self._schedule(0.0)
        return await future

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Start no transaction while another connection of this process writes (it would
        find the lock taken); between the writer's transactions the lock is always free."""
        self._queue.paused += 1
        try:
            yield
        finally:
            self._queue.paused -= 1
            self._schedule(0.0)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the SQLite connection is not open")
        return self._conn

    def _trace(self, sql: str) -> None:
        self.counts.statements += 1
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s", sql)

    def _schedule(self, delay_s: float) -> None:
        queue = self._queue
        if queue.scheduled or not queue.jobs or queue.paused or self._loop is None:
            return
        queue.scheduled = True
        if delay_s:
            self._loop.call_later(delay_s, self._flush)
        else:
            # After every callback now ready: all jobs submitted this iteration share one.
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        queue = self._queue
        queue.scheduled = False
        if queue.paused or not queue.jobs or self._conn is None:
            return
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                # Another connection (the ORM's, another process) holds the lock: soon again.
                if self._metrics is not None:
                    self._metrics.busy.inc()
                self._schedule(queue.delay_s)
                queue.delay_s = min(queue.delay_s * 2, BUSY_RETRY_MAX_S)
                return
            failed, queue.jobs = queue.jobs, []
            for _, future in failed:
                if not future.done():
                    future.set_exception(exc)
            return
        queue.delay_s = BUSY_RETRY_S
        batch, queue.jobs = queue.jobs[:MAX_BATCH], queue.jobs[MAX_BATCH:]
        self.counts.trips += len(batch)
        outcomes = self._commit(conn, batch)
        for future, result, error in outcomes:
            if future.done():
                continue  # its caller was cancelled; the write stands regardless
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
        self._schedule(0.0)

    def _commit(
        self, conn: sqlite3.Connection, batch: list[tuple[Job, asyncio.Future[Any]]]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        alone = len(batch) == 1
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            for job, future in batch:
                if alone:
                    outcomes.append((future, job(conn), None))
                    continue
                conn.execute("SAVEPOINT job")
                try:
                    result = job(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    outcomes.append((future, None, exc))
                else:
                    outcomes.append((future, result, None))
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(future, None, exc) for _, future in batch]
        self.counts.transactions += 1
        if self._metrics is not None:
            self._metrics.batches.inc()
            self._metrics.batch_size.observe(len(batch))
        return outcomes

    async def _checkpoint_loop(self) -> None:
        """PASSIVE checkpoints from a thread: they never block the writer or readers."""
        checkpointer = await asyncio.to_thread(self._open_checkpointer)
        running: asyncio.Future[sqlite3.Cursor] | None = None
        try:
            while True:
                await asyncio.sleep(CHECKPOINT_EVERY_S)
                running = asyncio.ensure_future(
                    asyncio.to_thread(checkpointer.execute, "PRAGMA wal_checkpoint(PASSIVE)")
                )
                try:
                    await asyncio.shield(running)
                except sqlite3.Error as exc:  # the next round tries again
                    _log.warning("WAL checkpoint failed: %s", exc)
        finally:
            # Cancelling the await does not stop the thread: closing the connection under a
            # running checkpoint crashes the process (SIGSEGV), so wait for it first.
            if running is not None:
                await asyncio.gather(running, return_exceptions=True)
            checkpointer.close()

    def _open_checkpointer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_TIMEOUT_MS}")
        return conn
