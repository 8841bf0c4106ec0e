"""create_bus picks the configured adapter; an unreachable Kafka fails start() in one line."""

from __future__ import annotations

import socket

import pytest

from soma.bus.kafka import KafkaBus
from soma.bus.local import LocalBus
from soma.bus.port import Bus, BusError
from soma.bus.service import create_bus
from soma.config.settings import BusSettings, KafkaSettings, Settings
from soma.core.errors import StartupError
from soma.core.service import HealthStatus, Service
from soma.observability.metrics import Metrics


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_backend_setting_selects_the_adapter() -> None:
    local = create_bus(Settings(), Metrics())
    kafka = create_bus(Settings(bus=BusSettings(backend="kafka")), Metrics())
    assert isinstance(local, LocalBus)
    assert isinstance(kafka, KafkaBus)
    for bus in (local, kafka):
        assert isinstance(bus, Bus) and isinstance(bus, Service)
        assert bus.name == "bus"


async def test_an_unreachable_broker_is_a_startup_error_naming_it() -> None:
    address = f"127.0.0.1:{closed_port()}"
    settings = BusSettings(backend="kafka", kafka=KafkaSettings(bootstrap_servers=address))
    bus = create_bus(Settings(bus=settings), Metrics())
    with pytest.raises(StartupError) as caught:
        await bus.start()
    message = str(caught.value)
    assert message.startswith(f"bus: cannot reach kafka at {address}: ")
    assert "\n" not in message
    assert (await bus.health()).status == HealthStatus.STOPPED
    with pytest.raises(BusError, match="not running"):
        await bus.publish("tool.requests", "k", b"v")
