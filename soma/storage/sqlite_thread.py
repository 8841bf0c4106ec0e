"""A thread that owns one `sqlite3` connection and runs jobs for the event loop.

SQLite has one writer. Rather than many connections queueing for its lock (and a thread hop
per statement, as an async driver does), one writer thread runs every hot-path write: the jobs
waiting when it looks share one transaction and one WAL commit (group commit), each in its own
savepoint so a failing job rolls back alone. A second instance, read-only, serves reads
without waiting for writes (WAL readers see the last commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import Counter, Histogram

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]

_log = logging.getLogger("soma.storage.sqlite")
BUSY_TIMEOUT_MS = 10_000
MAX_BATCH = 512
_STOP = object()


@dataclass(slots=True)
class StatementCounts:
    """What the hot path costs the database: for tests of the statement budget."""

    statements: int = 0
    transactions: int = 0
    trips: int = 0
    """Jobs handed to the thread (one hop each way): the SQLite form of a round trip."""


@dataclass(slots=True)
class _Item:
    job: Job
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Pause:
    parked: asyncio.Future[Any]
    resume: threading.Event


class SqliteThreadMetrics:
    def __init__(self, registry: Any) -> None:
        self.batches = Counter(
            "soma_db_group_commits_total",
            "SQLite writer transactions (each commits every job that was waiting).",
            registry=registry,
        )
        self.batch_size = Histogram(
            "soma_db_group_commit_jobs",
            "Jobs per SQLite writer transaction.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=registry,
        )


class SqliteThread:
    """Jobs run in submission order on the thread's connection; `write` enables group commit."""

    def __init__(
        self, path: Path, *, write: bool, name: str, metrics: SqliteThreadMetrics | None = None
    ) -> None:
        self._path = path
        self._write = write
        self._name = name
        self._metrics = metrics
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.counts = StatementCounts()

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._ready.wait)
        if self._open_error is not None:
            self._thread.join()
            self._thread = None
            raise self._open_error

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.to_thread(thread.join)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, job: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue `job`; the future resolves on the loop once its transaction committed."""
        if self._loop is None or self._thread is None:
            raise RuntimeError(f"{self._name} is not running")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(_Item(job, future))
        return future

    async def run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        return await self.submit(job)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=True, cached_statements=256
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if self._write:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        else:
            conn.execute("PRAGMA query_only = ON")
        conn.set_trace_callback(self._trace)
        return conn

    def _trace(self, sql: str) -> None:
        self.counts.statements += 1
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s: %s", self._name, sql)

    def _main(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        carry: Any = None
        try:
            while True:
                item = carry if carry is not None else self._queue.get()
                carry = None
                if item is _STOP:
                    return
                if isinstance(item, _Pause):
                    self._park(item)
                    continue
                batch: list[_Item] = [item]
                while len(batch) < MAX_BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if not isinstance(more, _Item):
                        carry = more  # a stop or a pause: after this batch commits
                        break
                    batch.append(more)
                self.counts.trips += len(batch)
                outcomes = self._commit(conn, batch) if self._write else self._read(conn, batch)
                assert self._loop is not None
                self._loop.call_soon_threadsafe(_resolve, outcomes)
        finally:
            conn.close()

    def _park(self, pause: _Pause) -> None:
        """Hold no lock and run nothing until the pauser is done with its own transaction."""
        assert self._loop is not None
        parked: list[_Outcome] = [(pause.parked, None, None)]
        self._loop.call_soon_threadsafe(_resolve, parked)
        pause.resume.wait()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Keep this writer idle (between its transactions) while the caller writes elsewhere.

        SQLite has one write lock; another connection of this process that queued for it
        behind a busy writer thread could starve, so it takes the thread's turn instead.
        """
        if self._loop is None or self._thread is None:
            yield
            return
        pause = _Pause(self._loop.create_future(), threading.Event())
        self._queue.put(pause)
        try:
            await pause.parked
            yield
        finally:
            pause.resume.set()

    def _read(self, conn: sqlite3.Connection, batch: list[_Item]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        for item in batch:
            try:
                outcomes.append((item.future, item.job(conn), None))
            except BaseException as exc:
                outcomes.append((item.future, None, exc))
        return outcomes

    def _commit(self, conn: sqlite3.Connection, batch: list[_Item]) -> list[_Outcome]:
        """Run the batch in one transaction; a lone job needs no savepoint."""
        alone = len(batch) == 1
        outcomes: list[_Outcome] = []
        try:
            _begin(conn)
            for item in batch:
                if alone:
                    outcomes.append((item.future, item.job(conn), None))
                    continue
                conn.execute("SAVEPOINT job")
                try:
                    result = item.job(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    outcomes.append((item.future, None, exc))
                else:
                    outcomes.append((item.future, result, None))
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            # Nothing of this batch is durable: every job fails (with its own error if it had one).
            outcomes = [(item.future, None, exc) for item in batch]
        self.counts.transactions += 1
        if self._metrics is not None:
            self._metrics.batches.inc()
            self._metrics.batch_size.observe(len(batch))
        return outcomes


_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _begin(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, retried while another process holds the lock past the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise


def _resolve(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.done():  # the awaiting task was cancelled; the write stands regardless
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
