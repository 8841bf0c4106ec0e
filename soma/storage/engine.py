"""Async SQLAlchemy engines for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import URL, AdaptedConnection, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

SQLITE_BUSY_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 5.0
_BEGIN_MODES = frozenset({"DEFERRED", "IMMEDIATE", "EXCLUSIVE"})
SQLITE_BEGIN_OPTION = "soma_sqlite_begin"
"""Execution option naming the SQLite BEGIN flavour: `IMMEDIATE` for writers, `DEFERRED` else."""


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


_JSON_CODEC: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}


def is_sqlite(engine_or_url: AsyncEngine | URL | str) -> bool:
    return _backend(engine_or_url) == "sqlite"


def is_postgres(engine_or_url: AsyncEngine | URL | str) -> bool:
    return _backend(engine_or_url) == "postgresql"


def _backend(engine_or_url: AsyncEngine | URL | str) -> str:
    url = engine_or_url.url if isinstance(engine_or_url, AsyncEngine) else make_url(engine_or_url)
    return url.get_backend_name()


def sqlite_file(url: URL | str) -> Path | None:
    """The database file of a SQLite URL, or None for in-memory databases."""
    parsed = make_url(url)
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database)


_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def async_url(url: URL | str) -> URL:
    """The URL with the async driver this platform uses (`postgresql://` → asyncpg)."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported database URL scheme {parsed.drivername!r}; "
            "use sqlite+aiosqlite:// or postgresql+asyncpg://"
        )
    return parsed.set(drivername=driver)


def create_engine(url: str, pool_size: int, echo: bool) -> AsyncEngine:
    """Build the engine; no connection is opened and nothing is written until first use."""
    parsed = async_url(url)
    if parsed.drivername == "sqlite+aiosqlite":
        return _sqlite_engine(parsed, pool_size, echo)
    return create_async_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=0,
        pool_recycle=1800,
        echo=echo,
        connect_args={"timeout": CONNECT_TIMEOUT_S},
        **_JSON_CODEC,
    )


def dedicated_engine(engine: AsyncEngine) -> AsyncEngine:
    """An engine without a pool on the same database, for long-lived connections of one job."""
    return create_async_engine(
        engine.url, poolclass=NullPool, connect_args={"timeout": CONNECT_TIMEOUT_S}
    )


def _sqlite_engine(url: URL, pool_size: int, echo: bool) -> AsyncEngine:
    kwargs: dict[str, Any] = {"echo": echo, **_JSON_CODEC}
    if sqlite_file(url) is not None:
        kwargs.update(pool_size=pool_size, max_overflow=0)
    engine = create_async_engine(url, **kwargs)
    event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
    event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN away from the sqlite3 driver so transactions (and DDL) follow SQLAlchemy's.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """`PRAGMA journal_mode = WAL`, retried: when two processes open a new file at once, SQLite
    answers "database is locked" at once here, without consulting the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:
            if "database is locked" not in str(exc) or time.monotonic() > deadline:
                raise
        # Only on a brand-new file's first connections, so a short blocking pause is fine.
        time.sleep(0.01)


def _sqlite_on_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
    if mode not in _BEGIN_MODES:
        raise ValueError(f"{SQLITE_BEGIN_OPTION} must be one of {sorted(_BEGIN_MODES)}")
    # One trip to the aiosqlite thread instead of the three a cursor-based execute takes.
    statement = f"BEGIN {mode}"
    adapted = conn.connection.dbapi_connection
    if not isinstance(adapted, AdaptedConnection):
        raise RuntimeError("SQLite engines here run on the aiosqlite driver")
    adapted.run_async(lambda driver: driver.execute_fetchall(statement))


def describe_url(url: URL | str) -> str:
    """The backend and location without credentials: `postgresql://host:port/db`."""
    parsed = async_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return f"sqlite:///{parsed.database or ':memory:'}"
    host = parsed.host or "localhost"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{backend}://{host}{port}/{parsed.database or ''}"
