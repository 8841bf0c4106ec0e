"""Assemble streamed chunks into one `ChatResult` (tool-call fragments merged by index)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from soma.core.ids import new_id
from soma.llm.types import ChatChunk, ChatResult, ToolCall, Usage


class _PartialCall:
    __slots__ = ("arguments", "id", "name")

    def __init__(self) -> None:
        self.id: str | None = None
        self.name = ""
        self.arguments: list[str] = []


class ResultBuilder:
    """Feed chunks with `add`, read the merged result with `result`."""

    def __init__(self, model: str = "", provider: str = "") -> None:
        self.model = model
        self.provider = provider
        self._text: list[str] = []
        self._calls: dict[int, _PartialCall] = {}
        self.usage: Usage | None = None
        self.finish_reason: str | None = None

    def add(self, chunk: ChatChunk) -> None:
        if chunk.text:
            self._text.append(chunk.text)
        for delta in chunk.tool_calls:
            call = self._calls.get(delta.index)
            if call is None:
                call = self._calls[delta.index] = _PartialCall()
            if delta.id:
                call.id = delta.id
            if delta.name:
                # Servers send the name once; a few repeat it on every fragment.
                call.name = delta.name if call.name in ("", delta.name) else call.name
            if delta.arguments:
                call.arguments.append(delta.arguments)
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.model and not self.model:
            self.model = chunk.model
        if chunk.provider and not self.provider:
            self.provider = chunk.provider

    @property
    def text(self) -> str:
        return "".join(self._text)

    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(
                id=call.id or f"call_{new_id()}",
                name=call.name,
                arguments="".join(call.arguments) or "{}",
            )
            for _, call in sorted(self._calls.items())
        )

    def result(self) -> ChatResult:
        return ChatResult(
            content=self.text,
            tool_calls=self.tool_calls(),
            usage=self.usage,
            finish_reason=self.finish_reason,
            model=self.model,
            provider=self.provider,
        )


async def collect(
    chunks: AsyncIterator[ChatChunk], model: str = "", provider: str = ""
) -> ChatResult:
    """Drain a chunk stream into a `ChatResult`."""
    builder = ResultBuilder(model, provider)
    async for chunk in chunks:
        builder.add(chunk)
    return builder.result()
