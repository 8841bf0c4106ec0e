"""The scripted OpenAI-compatible upstream as a fixture: one server per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.scripted_llm import ScriptedLLM


@pytest.fixture
def upstream() -> Iterator[ScriptedLLM]:
    # Unscripted, it answers "You said: <question>".
    with ScriptedLLM() as server:
        yield server
