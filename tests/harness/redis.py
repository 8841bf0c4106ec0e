"""pytest plugin: a throwaway redis server for the integration tests.

`SOMA_TEST_REDIS_URL` selects an existing server instead. Without it, the Debian `redis-server`
binary is started on a free loopback port with persistence off, and shut down at session end.
Failing to start is an error, never a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

ENV_URL = "SOMA_TEST_REDIS_URL"
_START_TIMEOUT_S = 10.0
_PORT_ATTEMPTS = 3


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_ping(url: str, deadline: float) -> None:
    last: Exception | None = None
    while time.monotonic() < deadline:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            if client.ping():
                return
        except redis.RedisError as exc:
            last = exc
        finally:
            client.close()
        time.sleep(0.05)
    raise RuntimeError(f"redis harness: no PING answer from {url}: {last}")


def _stop(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)


def _launch(root: Path, port: int) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis harness: redis-server is not installed (apt-get install redis)")
    pidfile, log = root / f"redis-{port}.pid", root / f"redis-{port}.log"
    done = subprocess.run(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--daemonize", "yes", "--pidfile", str(pidfile), "--dir", str(root),
         "--logfile", str(log)],
        capture_output=True, text=True, timeout=_START_TIMEOUT_S,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"redis harness: redis-server failed: {done.stderr or done.stdout}")
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_for_ping(url, time.monotonic() + _START_TIMEOUT_S)
    except RuntimeError as exc:
        _stop(pidfile)
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"{exc}\n{tail}") from exc
    return url


def start_redis() -> tuple[str, Callable[[], None]]:
    """Start a throwaway server; return its `redis://` URL and a stop function."""
    root = Path(tempfile.mkdtemp(prefix="soma-redis-"))
    errors: list[str] = []
    for _ in range(_PORT_ATTEMPTS):
        port = _free_port()
        try:
            url = _launch(root, port)
        except RuntimeError as exc:
            # Another process may have taken the port between probing and binding.
            errors.append(str(exc))
            continue

        def stop(pidfile: Path = root / f"redis-{port}.pid") -> None:
            try:
                _stop(pidfile)
            finally:
                shutil.rmtree(root, ignore_errors=True)

        return url, stop
    shutil.rmtree(root, ignore_errors=True)
    raise RuntimeError("redis harness: could not start redis-server:\n" + "\n".join(errors))


class RedisServer:
    """A throwaway server that can be stopped and started again on the same port."""

    def __init__(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="soma-redis-"))
        self.port = _free_port()
        self.url = _launch(self._root, self.port)

    def halt(self) -> None:
        _stop(self._root / f"redis-{self.port}.pid")

    def resume(self) -> None:
        _launch(self._root, self.port)

    def close(self) -> None:
        try:
            self.halt()
        finally:
            shutil.rmtree(self._root, ignore_errors=True)


def flush(url: str) -> None:
    """Empty the URL's database so a test starts from nothing."""
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL (`redis://host:port/db`) of the session's Redis server."""
    given = os.environ.get(ENV_URL)
    if given:
        yield given
        return
    url, stop = start_redis()
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def clean_redis_url(redis_url: str) -> str:
    """The session's Redis, its database flushed for this test."""
    flush(redis_url)
    return redis_url


@pytest.fixture(params=["memory", "redis"])
def cache_url(request: pytest.FixtureRequest) -> str:
    """Contract tests run once per cache backend (`memory://`, then a flushed Redis)."""
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue("clean_redis_url"))
