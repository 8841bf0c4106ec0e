"""The raw asyncpg pool the hot-path stores share (run store, tool store), and their counts.

Beside SQLAlchemy's engine: the hot path skips the ORM layer entirely. Connection-level
failures surface as `UnavailableError` (503 for clients, a wait for workers).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import asyncpg
import orjson
from sqlalchemy.engine import make_url

from soma.core.errors import UnavailableError
from soma.runs.store import StatementCounts

MAX_BATCH = 256
IN_FLIGHT = 4
"""Batches of one kind written at once (each on its own connection)."""
DOWN = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
)
"""Failures of the server or the connection, not of the statement: worth a retry later."""
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def translated(method: F) -> F:
    """Connection-level failures surface as `UnavailableError` (503, retried by workers)."""

    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except DOWN as exc:
            raise UnavailableError(f"the database is unavailable: {type(exc).__name__}") from exc

    return wrapper  # type: ignore[return-value]


async def init_connection(conn: asyncpg.Connection) -> None:
    """JSON in and out through orjson, as the SQLAlchemy engine does."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name,
            encoder=lambda value: orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset when a connection goes back to the pool: the stores set no session
    state (no SET, LISTEN, cursors or advisory locks), and asyncpg itself rolls back an open
    transaction. The default reset would cost a round trip on every release."""


def pool_dsn(url: str) -> str:
    """An asyncpg DSN from the SQLAlchemy URL (`postgresql+asyncpg://` → `postgresql://`)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgPool:
    """Opened by the run store's `start`; every store on it adds to the same counts."""

    def __init__(self, url: str, size: int, connect_timeout_s: float) -> None:
        self._dsn = pool_dsn(url)
        self._size = size
        self._timeout = connect_timeout_s
        self._pool: asyncpg.Pool | None = None
        self._counts = StatementCounts()

    async def start(self) -> None:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._size,
                timeout=self._timeout,
                init=init_connection,
                reset=keep_session,
            )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the run store is not started")
        return self._pool

    @property
    def counts(self) -> StatementCounts:
        """A snapshot of what the stores on this pool have cost the database so far."""
        return replace(self._counts)

    def count(self, *, trips: int, statements: int, transactions: int) -> None:
        counts = self._counts
        counts.trips += trips
        counts.statements += statements
        counts.transactions += transactions


async def settled(work: Awaitable[Any]) -> Any:
    """The outcome of `work`, an exception included (for batches answered item by item)."""
    try:
        return await work
    except Exception as exc:
        return exc
