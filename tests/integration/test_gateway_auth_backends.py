"""Authentication when the shared key cache (Redis) cannot be reached: fail closed with 503."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from soma.cache.service import create_cache
from soma.observability.metrics import Metrics
from soma.storage import DatabaseService
from tests.support.gateway_app import build_gateway, gateway_settings

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_key_cache_answers_503_not_401_or_500(tmp_path: Path) -> None:
    settings = gateway_settings(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'soma.db'}",
        f"redis://127.0.0.1:{_closed_port()}/0",
    )
    metrics = Metrics()
    database = DatabaseService(settings, metrics)
    cache = create_cache(settings, metrics)  # never started: its server does not exist
    await database.start()
    try:
        gateway, app = build_gateway(settings, metrics, database, cache)
        await gateway.start()  # the bootstrap needs only the database
        key = settings.bootstrap_key_file.read_text().strip()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gateway.test",
            headers={"Authorization": f"Bearer {key}"},
        ) as http:
            response = await http.get("/v1/agents")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "1"
        assert 'soma_gateway_auth_total{result="error"} 1.0' in metrics.exposition().decode()
        await gateway.stop()
    finally:
        await cache.stop()
        await database.stop()
