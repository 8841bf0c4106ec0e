"""Embeddings from any OpenAI-compatible `/v1/embeddings` endpoint."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import numpy as np

from soma.core.redact import redact_text
from soma.memory.embedder import Vectors, normalise
from soma.memory.model import MemoryUnavailableError

_PROBE = "dimension probe"


class EmbedderError(MemoryUnavailableError):
    """The embedding endpoint failed or answered something unusable."""


class OpenAIEmbedder:
    """Batches of `batch_size` texts per request; the dimension is learnt at start."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        batch_size: int = 32,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/embeddings"
        self._model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout_s = timeout_s
        self._batch_size = batch_size
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._dim = 0

    @property
    def model(self) -> str:
        return f"openai:{self._model}"

    @property
    def dim(self) -> int:
        return self._dim

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=self._timeout_s, headers=self._headers, transport=self._transport
        )
        try:
            self._dim = int((await self.embed([_PROBE])).shape[1])
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def embed(self, texts: Sequence[str]) -> Vectors:
        parts = [
            await self._batch(list(texts[i : i + self._batch_size]))
            for i in range(0, len(texts), self._batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self._dim), np.float32)

    async def _batch(self, texts: list[str]) -> Vectors:
        if self._client is None:
            raise EmbedderError("the embedder is not started")
        try:
            response = await self._client.post(
                self._url, json={"model": self._model, "input": texts}
            )
        except httpx.HTTPError as exc:
            raise EmbedderError(f"{self._url}: {type(exc).__name__} {exc}".strip()) from None
        if response.status_code != 200:
            body = redact_text(response.text[:300])
            raise EmbedderError(f"{self._url} answered {response.status_code}: {body}")
        try:
            data = sorted(response.json()["data"], key=lambda item: int(item["index"]))
            vectors = np.array([item["embedding"] for item in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbedderError(f"{self._url}: malformed answer ({exc})") from None
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise EmbedderError(f"{self._url}: {len(texts)} inputs, {len(vectors)} vectors")
        if self._dim and vectors.shape[1] != self._dim:
            raise EmbedderError(f"{self._url}: dimension changed to {vectors.shape[1]}")
        return normalise(vectors)
