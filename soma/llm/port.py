"""The port every chat model adapter implements."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol, runtime_checkable

from soma.llm.types import ChatChunk, ChatRequest, ChatResult


@runtime_checkable
class ChatProvider(Protocol):
    """One configured model behind one backend (an HTTP endpoint or a local GGUF file)."""

    @property
    def kind(self) -> str:
        """`openai` or `local`: the label metrics and results carry."""
        ...

    def stream(self, request: ChatRequest) -> AsyncGenerator[ChatChunk, None]:
        """Stream the reply; closing the iterator early stops generation."""
        ...

    async def complete(self, request: ChatRequest) -> ChatResult: ...

    async def check(self) -> str:
        """Health probe that spends no tokens; returns a detail or raises `LLMError`."""
        ...

    async def aclose(self) -> None: ...
