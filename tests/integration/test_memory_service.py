"""The memory service on both backends: recall, isolation, dedup, supersession, idempotent
ingestion, the SQLite index across restarts, re-embedding, and equal answers per backend."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from soma.config.memory import MemorySettings
from soma.core.clock import utcnow
from soma.core.ids import new_id
from soma.memory import index, records
from soma.memory.embedder import LocalEmbedder
from soma.memory.model import Memory, NewMemory, Recalled
from soma.storage.database import Database
from tests.support.memory_quality import facts_and_questions
from tests.support.memory_world import keep, running_memory, tenant_with_agent

pytestmark = pytest.mark.integration

FACTS = [
    "The user's dog is called Rex.",
    "The user works as a nurse in Lyon.",
    "The user is allergic to peanuts.",
    "The user's birthday is on the 3rd of May.",
    "The user plays the cello in an amateur orchestra.",
    "The user drives an old red Volvo.",
]


async def contents(found: list[Recalled]) -> list[str]:
    return [r.memory.content for r in found]


async def test_recall_finds_the_relevant_memory_of_the_scope(db: Database) -> None:
    scope = await tenant_with_agent(db, "acme")
    async with running_memory(db) as memory:
        for fact in FACTS:
            assert (await keep(memory, scope, fact)).outcome == "stored"
        found = await memory.recall(scope, "What is my dog's name?", 3)
        assert found[0].memory.content == "The user's dog is called Rex."
        assert len(found) == 3 and found[0].score > found[1].score
        found = await memory.recall(scope, "Which instrument do I play?", 1)
        assert [r.memory.content for r in found] == [FACTS[4]]


async def test_tenants_and_users_never_see_each_others_memories(db: Database) -> None:
    a = await tenant_with_agent(db, "a")
    b = await tenant_with_agent(db, "b")
    x, y = replace(a, user="x"), replace(a, user="y")
    async with running_memory(db) as memory:
        secret_a = await keep(memory, a, "The launch code is 1234.")
        await keep(memory, x, "X's favourite colour is blue.")
        await keep(memory, y, "Y's favourite colour is green.")
        await keep(memory, b, "Tenant B likes tea.")
        # Tenant B: recall, list, export, get and delete miss A's memories.
        assert await contents(await memory.recall(b, "launch code", 10)) == ["Tenant B likes tea."]
        listed = await memory.newest(b.tenant_id, 50)
        assert [m.content for m in listed.items] == ["Tenant B likes tea."]
        exported = [m.content async for m in memory.export(b.tenant_id)]
        assert exported == ["Tenant B likes tea."]
        assert await memory.get(b.tenant_id, secret_a.memory.id) is None
        assert not await memory.delete(b.tenant_id, secret_a.memory.id)
        assert await memory.forget_user(b.tenant_id, "x") == 0
        # Users: X recalls X's and the agent's shared memories, never Y's.
        recalled_x = await contents(await memory.recall(x, "favourite colour", 10))
        assert sorted(recalled_x) == ["The launch code is 1234.", "X's favourite colour is blue."]
        recalled_y = await contents(await memory.recall(y, "favourite colour", 10))
        assert "X's favourite colour is blue." not in recalled_y
        # A scope without a user sees only the shared memories.
        assert await contents(await memory.recall(a, "favourite colour", 10)) == [
            "The launch code is 1234."
        ]
        # A's memory is still there for A.
        assert await memory.get(a.tenant_id, secret_a.memory.id) is not None


async def test_a_changed_preference_replaces_the_old_one_in_recall(db: Database) -> None:
    scope = replace(await tenant_with_agent(db, "acme"), user="u1")
    async with running_memory(db) as memory:
        old = await keep(memory, scope, "My favourite colour is blue.", "preference")
        await keep(memory, scope, "I am allergic to peanuts.")
        new = await keep(memory, scope, "My favourite colour is green.", "preference")
        assert new.outcome == "stored" and new.superseded == (old.memory.id,)
        recalled = await contents(await memory.recall(scope, "What is my favourite colour?", 5))
        assert "My favourite colour is green." in recalled
        assert "My favourite colour is blue." not in recalled
        assert "I am allergic to peanuts." in recalled
        # Kept for history: exported with the memory that replaced it.
        history = {m.content: m async for m in memory.export(scope.tenant_id)}
        assert history["My favourite colour is blue."].superseded_by == new.memory.id
        assert history["My favourite colour is green."].superseded_by is None


async def test_a_restatement_is_not_stored_twice(db: Database) -> None:
    scope = await tenant_with_agent(db, "acme")
    async with running_memory(db) as memory:
        first = await keep(memory, scope, "My dog's name is Rex.")
        again = await keep(memory, scope, "My dog's name is Rex")
        assert again.outcome == "duplicate" and again.memory.id == first.memory.id
        assert len((await memory.newest(scope.tenant_id, 10)).items) == 1


async def test_a_run_is_ingested_once_however_often_it_is_delivered(db: Database) -> None:
    scope = await tenant_with_agent(db, "acme")
    run_id = new_id()
    items = [
        NewMemory(scope, "The user's sister is called Anna.", source="run", source_id=run_id),
        NewMemory(scope, "The user's sister is called Anna!", source="run", source_id=run_id),
        NewMemory(scope, "The user lives in Berlin.", source="run", source_id=run_id),
    ]
    async with running_memory(db) as memory:
        assert await memory.remember_run(scope.tenant_id, run_id, items) == 2
        assert await memory.remember_run(scope.tenant_id, run_id, items) is None
        assert await memory.ingested(run_id)
        assert len((await memory.newest(scope.tenant_id, 10)).items) == 2


async def test_the_index_is_rebuilt_from_the_table_on_start(db: Database) -> None:
    scope = await tenant_with_agent(db, "acme")
    async with running_memory(db) as memory:
        for fact in FACTS:
            await keep(memory, scope, fact)
        gone = await keep(memory, scope, "The user hates olives.")
        assert await memory.delete(scope.tenant_id, gone.memory.id)
        before = await contents(await memory.recall(scope, "What pet do I have?", 6))
    async with running_memory(db) as memory:
        after = await contents(await memory.recall(scope, "What pet do I have?", 6))
        assert after == before and "The user hates olives." not in after


async def test_forgetting_a_user_removes_all_their_memories(db: Database) -> None:
    scope = await tenant_with_agent(db, "acme")
    x = replace(scope, user="x")
    async with running_memory(db) as memory:
        await keep(memory, x, "My favourite colour is blue.", "preference")
        await keep(memory, x, "My favourite colour is green.", "preference")  # supersedes
        await keep(memory, x, "I live in Oslo.")
        await keep(memory, scope, "The office is closed on Fridays.")
        assert await memory.forget_user(scope.tenant_id, "x") == 3
        assert [m.content async for m in memory.export(scope.tenant_id)] == [
            "The office is closed on Fridays."
        ]
        assert await contents(await memory.recall(x, "colour", 5)) == [
            "The office is closed on Fridays."
        ]


async def test_memories_of_another_model_are_re_embedded_at_start(db: Database) -> None:
    scope = await tenant_with_agent(db, "acme")
    old = Memory(
        id=new_id(), tenant_id=scope.tenant_id, agent_id=scope.agent_id, user=None,
        kind="fact", content="The user's cat is called Tom.", tags=(), source="api",
        source_id=None, embedding_model="some-old-model", created_at=utcnow(),
    )  # fmt: skip
    async with db.transaction() as uow:
        await records.insert(uow.connection, old, np.ones(8, np.float32) / np.sqrt(8), [])
    async with running_memory(db) as memory:
        assert memory._reembed is not None
        assert await memory._reembed == 1
        found = await memory.recall(scope, "What is my cat called?", 1)
        assert [r.memory.id for r in found] == [old.id]
        assert found[0].memory.embedding_model == "all-MiniLM-L6-v2"


@pytest.mark.parametrize("exact_up_to", [3_000, 10], ids=["small-scope", "large-scope"])
async def test_both_backends_answer_as_exact_search_does(
    db: Database, exact_up_to: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recall equals an exact cosine ranking computed here, so both backends agree (and on
    PostgreSQL, both ways of searching: a scope searched exactly, and through HNSW)."""
    monkeypatch.setattr(index, "EXACT_UP_TO", exact_up_to)
    scope = await tenant_with_agent(db, "acme")
    rng = np.random.default_rng(7)
    words = ["apple", "river", "engine", "violin", "garden", "rocket", "winter", "coffee",
             "castle", "python", "mountain"]  # fmt: skip
    texts = sorted({" ".join(rng.choice(words, 4)) for _ in range(120)})
    settings = MemorySettings(duplicate_similarity=1.0, supersede_similarity=1.0)
    embedder = LocalEmbedder()
    await embedder.start()
    vectors = await embedder.embed(texts)
    query = (await embedder.embed(["a violin by the ocean in winter"]))[0]
    expected = [texts[i] for i in np.argsort(-(vectors @ query), kind="stable")[:10]]
    async with running_memory(db, settings) as memory:
        for text in texts:
            await keep(memory, scope, text)
        found = await memory.recall(scope, "a violin by the ocean in winter", 10)
        # Again: a scope found large goes straight to HNSW now.
        again = await memory.recall(scope, "a violin by the ocean in winter", 10)
    assert [r.memory.content for r in found] == expected
    assert [r.memory.content for r in again] == expected


async def test_recall_quality_hit_at_5(db: Database) -> None:
    """Questions about 300 stored facts find their answer among the top 5 (a floor, not a
    timing): bench/bench_memory.py reports the exact figure."""
    facts, questions = facts_and_questions()
    scope = await tenant_with_agent(db, "acme")
    settings = MemorySettings(duplicate_similarity=1.0, supersede_similarity=1.0)
    async with running_memory(db, settings) as memory:
        for fact in facts:
            await keep(memory, scope, fact)
        hits = 0
        for question in questions:
            found = await memory.recall(scope, question.text, 5)
            hits += question.answer in [r.memory.content for r in found]
    assert hits / len(questions) >= 0.9
