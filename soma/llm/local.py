"""Adapter for a local GGUF model via llama.cpp (xllamacpp): inference on worker threads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from soma.llm.accumulate import collect
from soma.llm.errors import (
    LLMError,
    ProviderRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    StreamInterruptedError,
)
from soma.llm.local_model import LocalModel, bundled_model_path
from soma.llm.types import ChatChunk, ChatRequest, ChatResult

log = logging.getLogger("soma.llm.local")

ModelLoader = Callable[[Path, int], LocalModel]


class _End:
    """Sentinel the worker posts when generation finished normally."""


_END = _End()


class LocalProvider:
    """Up to `max_concurrency` model instances, each generating on its own worker thread."""

    kind = "local"

    def __init__(
        self,
        name: str,
        path: Path | None = None,
        context_tokens: int = 2048,
        max_concurrency: int = 1,
        timeout_s: float = 60.0,
        loader: ModelLoader = LocalModel.load,
    ) -> None:
        self.name = name
        self._configured_path = path
        self.context_tokens = context_tokens
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self._loader = loader
        # Threads start on first submit, so constructing the provider stays free.
        self._executor = ThreadPoolExecutor(max_concurrency, thread_name_prefix=f"llm-{name}")
        self._slots = asyncio.Semaphore(max_concurrency)
        self._load_lock = asyncio.Lock()
        self._idle: list[LocalModel] = []
        self._instances = 0
        self._active: dict[Future[None], tuple[LocalModel, threading.Event]] = {}
        self._closed = False

    @property
    def path(self) -> Path:
        return self._configured_path or bundled_model_path()

    @property
    def loaded(self) -> bool:
        return self._instances > 0

    @property
    def active_generations(self) -> int:
        """Worker threads still generating (a cancelled one leaves at its next token)."""
        return len(self._active)

    def describe(self) -> str:
        if self._configured_path is not None:
            return f"local {self._configured_path}"
        return f"local {bundled_model_path().name}, bundled"

    async def load(self) -> None:
        """Load the first instance on a thread; a no-op once loaded."""
        async with self._load_lock:
            if self._instances == 0:
                self._idle.append(await self._load_instance())

    async def _load_instance(self) -> LocalModel:
        path = self.path
        if not path.is_file():
            raise ProviderUnavailableError(f"{self.name}: model file not found: {path}")
        loop = asyncio.get_running_loop()
        try:
            model = await loop.run_in_executor(
                self._executor, self._loader, path, self.context_tokens
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise ProviderUnavailableError(f"{self.name}: cannot load {path}: {exc}") from exc
        self._instances += 1
        log.info(
            "local model loaded",
            extra={"model": self.name, "path": str(path), "instances": self._instances},
        )
        return model

    async def _checkout(self) -> LocalModel:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise ProviderTimeoutError(
                f"{self.name}: all {self.max_concurrency} generation slots busy"
                f" for {self.timeout_s:g}s"
            ) from None
        try:
            async with self._load_lock:
                # A slot is held, so fewer than max_concurrency instances are busy.
                return self._idle.pop() if self._idle else await self._load_instance()
        except BaseException:
            self._slots.release()
            raise

    def _checkin(self, future: Future[None]) -> None:
        model, _ = self._active.pop(future)
        if self._closed:
            model.close()
        else:
            self._idle.append(model)
        self._slots.release()

    async def complete(self, request: ChatRequest) -> ChatResult:
        return await collect(self.stream(request), self.name, self.kind)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatChunk, None]:
        if self._closed:
            raise ProviderUnavailableError(f"{self.name}: provider is closed")
        model = await self._checkout()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ChatChunk | _End | BaseException] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(chunk: ChatChunk) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, chunk)

        def work() -> None:
            outcome: _End | BaseException = _END
            try:
                model.generate(request, emit, cancelled)
            except BaseException as exc:  # handed to the consumer, which decides what it means
                outcome = exc
            _call_soon(loop, queue.put_nowait, outcome)

        future = self._executor.submit(work)
        self._active[future] = (model, cancelled)
        # The instance goes back only when its thread is really done, whatever the consumer does.
        future.add_done_callback(lambda done: _call_soon(loop, self._checkin, done))
        delivered = False
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), self.timeout_s)
                except TimeoutError:
                    raise self._failure(
                        ProviderTimeoutError(f"{self.name}: no token within {self.timeout_s:g}s"),
                        delivered,
                    ) from None
                if isinstance(item, _End):
                    await asyncio.wrap_future(future)
                    return
                if isinstance(item, BaseException):
                    await asyncio.wrap_future(future)
                    raise self._failure(item, delivered) from item
                delivered = True
                yield item
        finally:
            if not future.done():
                # Consumer gone, timed out or failed: stop the thread at its next token.
                cancelled.set()
                model.abort()

    def _failure(self, exc: BaseException, delivered: bool) -> LLMError:
        if isinstance(exc, LLMError) and not delivered:
            return exc
        if isinstance(exc, ValueError):
            # LocalModel raises ValueError for requests the engine refuses (prompt over n_ctx).
            return ProviderRequestError(f"{self.name}: {exc}")
        message = f"{self.name}: generation failed: {type(exc).__name__}: {exc}"
        if delivered:
            return StreamInterruptedError(message)
        return ProviderUnavailableError(message)

    async def check(self) -> str:
        """File present (and loaded?): no tokens are spent."""
        path = self.path
        if not path.is_file():
            raise ProviderUnavailableError(f"model file not found: {path}")
        if self._instances:
            return f"loaded {path.name} (instances={self._instances}, n_ctx={self.context_tokens})"
        return f"{path.name} present, loads on first use"

    async def aclose(self) -> None:
        """Stop running generations, wait for their threads, free every instance."""
        self._closed = True
        for model, cancelled in list(self._active.values()):
            cancelled.set()
            model.abort()
        if self._active:
            await asyncio.gather(
                *(asyncio.wrap_future(f) for f in self._active), return_exceptions=True
            )
        while self._idle:
            self._idle.pop().close()
        self._executor.shutdown(wait=False)


def _call_soon(
    loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: object
) -> None:
    # A closed loop means the process is shutting down and nobody needs the callback.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)
