"""With no configuration at all, a chat is answered by the bundled local model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.platform import Platform, launch
from tests.e2e.stacks import Api

pytestmark = pytest.mark.e2e


def test_default_configuration_answers_through_the_local_model(
    tmp_path: Path, platform_factory: list[Platform]
) -> None:
    platform = launch(tmp_path)
    platform_factory.append(platform)
    platform.wait_healthy(timeout=120)
    key_file = tmp_path / "data" / "admin.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    key = key_file.read_text().strip()
    assert key not in platform.logs()
    api = Api(platform, key)
    # Health details are for an admin key of the platform tenant.
    health = api.client.get("/v1/health").json()
    assert "SmolLM2" in health["services"]["llm"]["detail"]
    session = api.session()
    response = api.send(session, "What is the capital of France?", wait="true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["run"]["status"] == "completed"
    assert body["run"]["usage"]["completion_tokens"] > 0
    assert body["message"]["content"].strip() != ""
    assert platform.terminate(timeout=30) == 0
