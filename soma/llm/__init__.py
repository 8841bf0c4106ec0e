"""Chat models: the provider port, OpenAI-compatible and local llama.cpp adapters, the router."""

from soma.llm.accumulate import ResultBuilder, collect
from soma.llm.breaker import BreakerState, CircuitBreaker
from soma.llm.errors import (
    AllModelsFailedError,
    CircuitOpenError,
    LLMError,
    ProviderRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    StreamInterruptedError,
    UnknownModelError,
)
from soma.llm.metrics import LLMMetrics
from soma.llm.port import ChatProvider
from soma.llm.router import ModelRouter
from soma.llm.service import LLMService, describe
from soma.llm.types import (
    ChatChunk,
    ChatMessage,
    ChatRequest,
    ChatResult,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
)

__all__ = [
    "AllModelsFailedError",
    "BreakerState",
    "ChatChunk",
    "ChatMessage",
    "ChatProvider",
    "ChatRequest",
    "ChatResult",
    "CircuitBreaker",
    "CircuitOpenError",
    "LLMError",
    "LLMMetrics",
    "LLMService",
    "ModelRouter",
    "ProviderRequestError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "ResultBuilder",
    "StreamInterruptedError",
    "ToolCall",
    "ToolCallDelta",
    "ToolSpec",
    "UnknownModelError",
    "Usage",
    "collect",
    "describe",
]
