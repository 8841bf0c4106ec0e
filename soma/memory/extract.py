"""What a completed turn leaves to remember: the user's words, or facts a model extracts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson

from soma.llm.types import ChatMessage, ChatRequest, ChatResult
from soma.memory.model import KINDS, Kind, Memory

_log = logging.getLogger("soma.memory")
MAX_FACTS = 8
EXTRACTION_PROMPT = """You keep an assistant's long-term memory about its user.
From the conversation turn below, extract the durable facts worth remembering in later
conversations: facts about the user, their preferences, plans and events, and corrections of
earlier facts. Skip greetings, questions, and anything only useful in this conversation.
Write each fact as one short self-contained sentence about the user in the third person.
When a fact changes or contradicts a numbered memory listed under "Known", give that number
in "replaces". Answer with JSON only:
{"memories": [{"content": "...", "kind": "fact|preference|event|note", "replaces": [1]}]}
and {"memories": []} when there is nothing worth keeping."""


@dataclass(frozen=True, slots=True)
class Fact:
    content: str
    kind: Kind
    replaces: tuple[str, ...] = ()
    """Ids of known memories this one changes or contradicts."""


class Extractor(Protocol):
    async def extract(self, question: str, answer: str, known: Sequence[Memory]) -> list[Fact]:
        """What to keep from one turn; `known`: live memories of its scope it may replace."""
        ...


class VerbatimExtractor:
    """Keeps the user's message as it is; questions are not facts and are skipped."""

    async def extract(self, question: str, answer: str, known: Sequence[Memory]) -> list[Fact]:
        text = question.strip()
        if not text or text.endswith("?"):
            return []
        return [Fact(text, "note")]


class Completer(Protocol):
    async def complete(self, model: str | None, request: ChatRequest) -> ChatResult: ...


class Models(Protocol):
    """The LLM service: its router exists once the service has started."""

    @property
    def router(self) -> Completer: ...


class LLMExtractor:
    """One model call per turn that answers with the facts to keep (and what they replace)."""

    def __init__(self, models: Models, model: str | None) -> None:
        self._models = models
        self._model = model

    async def extract(self, question: str, answer: str, known: Sequence[Memory]) -> list[Fact]:
        listed = "".join(f"\n[{i}] {m.content}" for i, m in enumerate(known, 1)) or "\n(none)"
        turn = f"Known:{listed}\n\nUser: {question}\n\nAssistant: {answer}"
        request = ChatRequest(
            messages=[
                ChatMessage(role="system", content=EXTRACTION_PROMPT),
                ChatMessage(role="user", content=turn),
            ],
            temperature=0.0,
            max_tokens=512,
        )
        result = await self._models.router.complete(self._model, request)
        return parse_facts(result.content, [m.id for m in known])


def parse_facts(text: str, known_ids: Sequence[str] = ()) -> list[Fact]:
    """The `memories` of a JSON answer (also inside prose or a code fence); none if invalid."""
    start, end = text.find("{"), text.rfind("}")
    try:
        data = orjson.loads(text[start : end + 1]) if 0 <= start < end else None
    except orjson.JSONDecodeError:
        data = None
    items = data.get("memories") if isinstance(data, dict) else None
    if not isinstance(items, list):
        # A model that cannot follow the format leaves nothing to keep; the turn is unaffected.
        _log.warning("memory extraction: the model's answer is not the JSON asked for")
        return []
    facts: list[Fact] = []
    for item in items[:MAX_FACTS]:
        if not isinstance(item, dict) or not isinstance(item.get("content"), str):
            continue
        content = " ".join(item["content"].split())
        kind = item.get("kind")
        numbers = item.get("replaces")
        replaces = tuple(
            known_ids[n - 1]
            for n in (numbers if isinstance(numbers, list) else [])
            if isinstance(n, int) and 1 <= n <= len(known_ids)
        )
        if content:
            facts.append(Fact(content, kind if kind in KINDS else "fact", replaces))
    return facts
