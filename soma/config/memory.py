"""Settings of long-term memory: the embedder, extraction and recall."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from soma.config.section import Section


class EmbedderSettings(Section):
    """How memories are embedded (soma/memory)."""

    provider: Literal["local", "openai"] = "local"
    """`local`: all-MiniLM-L6-v2 (ONNX, int8) in process; `openai`: any `/v1/embeddings`."""
    base_url: str | None = None
    """The OpenAI-compatible server whose `/v1/embeddings` embeds (`openai`)."""
    model: str | None = None
    """The remote model's name (`openai`); the local model is always all-MiniLM-L6-v2."""
    api_key: SecretStr | None = None
    """Bearer key of that server; never logged."""
    timeout_s: float = Field(default=30.0, gt=0)
    """Longest wait for one embeddings call."""
    batch_size: int = Field(default=32, ge=1, le=2048)
    """Texts embedded per call (ingest and re-embed batch them)."""
    threads: int = Field(default=1, ge=1, le=64)
    """ONNX Runtime threads per embedding call (calls run in a worker thread)."""

    @model_validator(mode="after")
    def _openai_needs_url(self) -> EmbedderSettings:
        if self.provider == "openai" and not (self.base_url and self.model):
            raise ValueError("an openai embedder needs base_url and model")
        return self


class MemorySettings(Section):
    """Long-term memory (ARCHITECTURE §12)."""

    embedder: EmbedderSettings = EmbedderSettings()
    extraction: Literal["llm", "verbatim"] = "verbatim"
    """What the pipeline keeps of a turn: facts a model extracts, or the user's messages."""
    extraction_model: str | None = None
    """Model (a name in `llm.models`) that extracts facts; `None` means `llm.default_model`."""
    duplicate_similarity: float = Field(default=0.95, gt=0, le=1)
    """A new memory this similar to a live one of its scope is the same memory: not stored."""
    supersede_similarity: float = Field(default=0.75, gt=0, le=1)
    """A new memory of the same kind this similar restates or contradicts it: it replaces it.
    Embeddings alone judge this roughly (all-MiniLM-L6-v2: "favourite colour is blue" vs
    "... green" 0.79, "lives in Berlin" vs "lives in Paris" 0.64); with `extraction = "llm"`
    the model also names the known memories a new fact replaces."""
    recall_k: int = Field(default=5, ge=1, le=100)
    """Memories recalled per turn unless the agent says otherwise."""
    recall_budget_tokens: int = Field(default=512, ge=16, le=100_000)
    """Tokens of recalled memories a turn's prompt may take unless the agent says otherwise."""
    max_content_chars: int = Field(default=4_000, ge=16, le=100_000)
    """Longest memory content accepted (`POST /v1/memories`, the pipeline, `memory_save`)."""
