"""The scripted upstream as its own process, the way e2e tests run it beside the orchestrator."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from soma.llm.openai import OpenAIProvider
from soma.llm.types import ChatMessage, ChatRequest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def launch(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.scripted_llm", "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line.startswith("READY http://127.0.0.1:"), line
    return process, line.removeprefix("READY ")


async def test_standalone_server_replies_and_stops_on_sigterm() -> None:
    process, base_url = launch("--reply", "Hello from upstream", "--chunks", "2")
    provider = OpenAIProvider("gpt", base_url, "any")
    try:
        assert "reachable" in await provider.check()
        chunks = [c async for c in provider.stream(ChatRequest([ChatMessage("user", "hi")]))]
        assert [c.text for c in chunks if c.text] == ["Hello from", " upstream"]
    finally:
        await provider.aclose()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


async def test_standalone_server_echoes_by_default() -> None:
    process, base_url = launch()
    provider = OpenAIProvider("gpt", base_url, "any")
    try:
        result = await provider.complete(ChatRequest([ChatMessage("user", "ping me back")]))
        assert result.content == "You said: ping me back"
    finally:
        await provider.aclose()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
