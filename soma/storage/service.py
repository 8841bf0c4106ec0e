"""The `database` service: connect, migrate, report health, own the outbox store."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from soma.config import Settings
from soma.core.errors import StartupError
from soma.core.service import Health
from soma.observability.metrics import Metrics
from soma.storage.database import Database
from soma.storage.engine import create_engine, describe_url, is_sqlite, sqlite_file
from soma.storage.metrics import StorageMetrics
from soma.storage.migrate import current_revision, downgrade, head_revision, migrate
from soma.storage.outbox_signal import OutboxSignal
from soma.storage.outbox_store import SqlOutboxStore
from soma.storage.pg_pool import PgPool
from soma.storage.runstore_postgres import PostgresRunStore
from soma.storage.runstore_sqlite import SqliteRunStore
from soma.storage.sqlite_loop import SqliteMetrics
from soma.storage.toolstore_postgres import PostgresToolStore
from soma.storage.toolstore_sqlite import SqliteToolStore

CONNECT_TIMEOUT_S = 5.0
HEALTH_TIMEOUT_S = 5.0


class DatabaseService:
    """Constructing it opens nothing and writes nothing (safe for `--dry-run`)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._url = settings.database_url
        self._where = describe_url(self._url)
        self._secrets = tuple(s for s in (make_url(self._url).password,) if s)
        self.engine: AsyncEngine = create_engine(
            self._url, settings.database.pool_size, settings.database.echo
        )
        path = sqlite_file(self._url)
        signal = OutboxSignal()
        self.run_store: SqliteRunStore | PostgresRunStore
        self.tool_store: SqliteToolStore | PostgresToolStore
        if is_sqlite(self.engine):
            if path is None:
                raise StartupError("database: in-memory SQLite is not supported; use a file")
            sqlite_store = SqliteRunStore(path, signal, SqliteMetrics(metrics.registry))
            self.run_store = sqlite_store
            self.tool_store = SqliteToolStore(sqlite_store.loops, signal)
            exclusive = sqlite_store.exclusive
        else:
            pg = PgPool(self._url, settings.database.pool_size, CONNECT_TIMEOUT_S)
            self.run_store = PostgresRunStore(pg, signal)
            self.tool_store = PostgresToolStore(pg, signal)
            exclusive = None
        self.database = Database(self.engine, StorageMetrics(metrics), signal, exclusive)
        self.outbox_store = SqlOutboxStore(self.database, self.run_store)
        self._head: str | None = None

    @property
    def name(self) -> str:
        return "database"

    @staticmethod
    def describe(settings: Settings) -> str:
        """The backend URL for the dry-run plan, without credentials."""
        return describe_url(settings.database_url)

    async def migrate(self) -> str:
        """Connect and upgrade the schema to head; `--migrate-only` does this and no more."""
        await self._connect()
        try:
            self._head = await migrate(self.engine)
        except Exception as exc:
            raise StartupError(
                f"database: migrating {self._where} failed: {self._reason(exc)}"
            ) from None
        return self._head

    async def downgrade(self, revision: str) -> str | None:
        """Connect and downgrade the schema to `revision` (`base`: nothing left)."""
        await self._connect()
        try:
            return await downgrade(self.engine, revision)
        except Exception as exc:
            raise StartupError(
                f"database: downgrading {self._where} to {revision} failed: {self._reason(exc)}"
            ) from None

    async def _connect(self) -> None:
        path = sqlite_file(self._url)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StartupError(
                    f"database: cannot create {path.parent}: {exc.strerror or exc}"
                ) from None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except Exception as exc:
            raise StartupError(
                f"database: cannot connect to {self._where}: {self._reason(exc)}"
            ) from None

    async def start(self) -> None:
        await self.migrate()
        try:
            await self.run_store.start()
        except Exception as exc:
            raise StartupError(
                f"database: cannot open the run store on {self._where}: {self._reason(exc)}"
            ) from None
        try:
            await self.outbox_store.start()
        except Exception as exc:
            raise StartupError(
                f"database: cannot listen for outbox notifications on {self._where}: "
                f"{self._reason(exc)}"
            ) from None

    async def stop(self) -> None:
        await self.outbox_store.close()
        await self.run_store.close()
        await self.engine.dispose()

    async def health(self) -> Health:
        head = self._head or head_revision()
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                # Reading the schema revision is the connectivity probe too.
                revision = await current_revision(self.engine)
        except Exception as exc:
            return Health.unhealthy(f"cannot reach {self._where}: {self._reason(exc)}")
        if revision != head:
            return Health.unhealthy(f"schema at {revision or 'nothing'}, expected head {head}")
        return Health.healthy(f"head {head}")

    def _reason(self, exc: BaseException) -> str:
        """One line naming the cause, with any secret of the URL masked."""
        cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
        if isinstance(cause, TimeoutError) and not str(cause):
            return f"timed out after {CONNECT_TIMEOUT_S:g}s"
        lines = str(cause).strip().splitlines()
        reason = lines[0] if lines else type(cause).__name__
        for secret in self._secrets:
            reason = reason.replace(secret, "***")
        return reason
