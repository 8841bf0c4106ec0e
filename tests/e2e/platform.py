"""pytest plugin: launch the real `python -m orchestrator.main` as a subprocess on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
_LAUNCHED: list[subprocess.Popen[bytes]] = []
"""Every platform process the suite started: none may outlive it."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Platform:
    """A running orchestrator process and where it listens."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 60.0) -> httpx.Response:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"process exited {self.process.returncode}:\n{self.logs()}")
            try:
                response = httpx.get(f"{self.base_url}/v1/health", timeout=2)
                if response.status_code == 200:
                    return response
                last = response.text
            except httpx.TransportError as exc:
                last = repr(exc)
            time.sleep(0.05)
        raise AssertionError(f"not healthy within {timeout}s: {last}\n{self.logs()}")

    def terminate(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def launch(
    tmp_path: Path, extra_env: Mapping[str, str] | None = None, args: tuple[str, ...] = ()
) -> Platform:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOMA_")}
    env.update(
        {
            "SOMA_HTTP__PORT": str(port),
            "SOMA_DATA_DIR": str(tmp_path / "data"),
            **(extra_env or {}),
        }
    )
    log_path = tmp_path / f"orchestrator-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.main", *args],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    _LAUNCHED.append(process)
    return Platform(process, f"http://127.0.0.1:{port}", log_path, env)


@pytest.fixture(scope="session", autouse=True)
def no_platform_left_running() -> Iterator[None]:
    """Fails the session if a test left a platform process running (and stops it)."""
    yield
    left = [p for p in _LAUNCHED if p.poll() is None]
    for process in left:
        process.kill()
        process.wait()
    assert not left, f"{len(left)} platform process(es) left running: {[p.pid for p in left]}"


@pytest.fixture
def platform_factory(tmp_path: Path) -> Iterator[list[Platform]]:
    started: list[Platform] = []
    yield started
    for platform in started:
        if platform.process.poll() is None:
            platform.process.kill()
            platform.process.wait()
