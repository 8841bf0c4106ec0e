"""An OpenAI-compatible embeddings endpoint as the embedder (the scripted upstream serves
`/v1/embeddings`), and the re-embed job when the configured embedder changes."""

from __future__ import annotations

import pytest

from soma.config.settings import MemorySettings
from soma.memory.embedder import LOCAL_MODEL
from soma.memory.model import MemoryUnavailableError
from soma.storage.database import Database
from tests.support.memory_world import keep, running_memory, tenant_with_agent
from tests.support.scripted_llm import EMBEDDING_DIM, ScriptedLLM

pytestmark = pytest.mark.integration


def _remote(upstream: ScriptedLLM) -> MemorySettings:
    embedder = {"provider": "openai", "base_url": upstream.base_url, "model": "bow",
                "api_key": "secret-token", "batch_size": 2}  # fmt: skip
    return MemorySettings.model_validate({"embedder": embedder})


async def test_a_remote_embedder_serves_and_a_change_re_embeds(
    db: Database, upstream: ScriptedLLM
) -> None:
    scope = await tenant_with_agent(db, "acme")
    facts = ["The user's dog is called Rex.", "The user lives in Lyon.", "Cello is played."]
    async with running_memory(db) as memory:  # the local model first
        for fact in facts:
            await keep(memory, scope, fact)
    async with running_memory(db, _remote(upstream)) as memory:
        assert memory.model == "openai:bow"
        assert memory._reembed is not None and await memory._reembed == 3
        found = await memory.recall(scope, "in which city the user lives", 1)
        assert [r.memory.content for r in found] == ["The user lives in Lyon."]
        assert found[0].memory.embedding_model == "openai:bow"
        await keep(memory, scope, "The user drives a Volvo.")
    calls = [r for r in upstream.requests if r.path.endswith("/embeddings")]
    assert calls and all(r.headers["authorization"] == "Bearer secret-token" for r in calls)
    assert max(len(r.body["input"]) for r in calls) == 2  # batched by batch_size
    async with running_memory(db) as memory:  # and back to the local model
        assert memory._reembed is not None and await memory._reembed == 4
        found = await memory.recall(scope, "What car does the user drive?", 1)
        assert found[0].memory.embedding_model == LOCAL_MODEL
    assert EMBEDDING_DIM != 384


async def test_an_unreachable_embedding_endpoint_fails_the_start(db: Database) -> None:
    settings = MemorySettings.model_validate(
        {"embedder": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x"}}
    )
    with pytest.raises(MemoryUnavailableError, match=r"127\.0\.0\.1:9"):
        async with running_memory(db, settings):
            pass
