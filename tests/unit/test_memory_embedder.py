"""The local embedder against reference vectors of the float32 model.

tests/fixtures/minilm_reference.json was made by `python -m tests.support.minilm_reference`: a
NumPy BERT forward pass over the original PyTorch weights, independent of ONNX Runtime and of
the int8 export the embedder runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from soma.memory.embedder import LOCAL_DIM, LocalEmbedder
from soma.memory.extract import Fact, VerbatimExtractor, parse_facts
from soma.memory.flat_index import FlatIndex
from soma.memory.model import Memory, Scope
from soma.runtime.recall import memory_prompt, within_budget

FIXTURE = Path(__file__).parent.parent / "fixtures" / "minilm_reference.json"


async def test_onnx_embeddings_match_the_reference_model() -> None:
    reference = json.loads(FIXTURE.read_text())["vectors"]
    embedder = LocalEmbedder(batch_size=2)
    await embedder.start()
    try:
        vectors = await embedder.embed(list(reference))
    finally:
        await embedder.stop()
    assert vectors.shape == (len(reference), LOCAL_DIM) and vectors.dtype == np.float32
    for (sentence, expected), got in zip(reference.items(), vectors, strict=True):
        cosine = float(np.dot(np.asarray(expected, np.float32), got))
        assert cosine >= 0.999, f"{sentence!r}: cosine {cosine:.5f}"
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def _memory(memory_id: str, scope: Scope) -> Memory:
    from datetime import UTC, datetime

    return Memory(memory_id, scope.tenant_id, scope.agent_id, scope.user, "fact", memory_id,
                  (), "api", None, "m", datetime.now(UTC))  # fmt: skip


def test_the_flat_index_filters_by_tenant_agent_and_user_and_removes() -> None:
    index = FlatIndex(2)
    shared, x, y = Scope("t", "a"), Scope("t", "a", "x"), Scope("t", "a", "y")
    other_agent, other_tenant = Scope("t", "b", "x"), Scope("u", "a", "x")
    q = np.array([1.0, 0.0], np.float32)
    for i, scope in enumerate([shared, x, y, other_agent, other_tenant] * 30):
        angle = i / 200
        index.add(_memory(f"{i}", scope), np.array([np.cos(angle), np.sin(angle)], np.float32))
    found = index.search(x, q, 100, shared=True)
    assert {r.memory.user for r in found} == {"x", None}
    assert all(r.memory.tenant_id == "t" and r.memory.agent_id == "a" for r in found)
    assert [r.score for r in found] == sorted((r.score for r in found), reverse=True)
    assert {r.memory.user for r in index.search(x, q, 100, shared=False)} == {"x"}
    assert index.search(Scope("t", "a", "nobody"), q, 5, shared=False) == []
    best = found[0].memory.id
    index.remove(best)
    assert best not in {r.memory.id for r in index.search(x, q, 100, shared=True)}
    assert len(index) == 149


def test_recalled_memories_stop_at_the_token_budget() -> None:
    contents = ["a" * 40, "b" * 40, "c" * 40]  # 14 tokens each by the estimate
    assert within_budget(contents, 30) == contents[:2]
    assert within_budget(contents, 5) == []
    assert memory_prompt(["x  y\nz"]).endswith("\n- x y z")


async def test_extraction_parses_the_models_json_and_keeps_statements_verbatim() -> None:
    answer = 'Sure:\n```json\n{"memories": [{"content": " Likes  tea ", "kind": "preference"},'
    answer += ' {"content": "Born 1990", "kind": "bogus"}, {"nope": 1}]}\n```'
    answer = answer.replace('"bogus"}', '"bogus", "replaces": [2, 7, "x"]}')
    assert parse_facts(answer, ["m1", "m2"]) == [
        Fact("Likes tea", "preference"),
        Fact("Born 1990", "fact", ("m2",)),
    ]
    assert parse_facts("I cannot do that") == []
    verbatim = VerbatimExtractor()
    assert await verbatim.extract("I live in Oslo.", "Nice!", []) == [
        Fact("I live in Oslo.", "note")
    ]
    assert await verbatim.extract("Where do I live?", "Oslo", []) == []
