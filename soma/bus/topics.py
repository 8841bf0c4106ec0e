"""Logical topic names (ARCHITECTURE §7); adapters map them to broker names."""

from __future__ import annotations

CONVERSATION_INBOUND = "conversation.inbound"
CONVERSATION_OUTBOUND = "conversation.outbound"
TOOL_REQUESTS = "tool.requests"
TOOL_RESULTS = "tool.results"

TOPICS: tuple[str, ...] = (
    CONVERSATION_INBOUND,
    CONVERSATION_OUTBOUND,
    TOOL_REQUESTS,
    TOOL_RESULTS,
)

DLQ_SUFFIX = ".dlq"

# Headers a dead-lettered message carries besides its original ones.
HEADER_ERROR = "x-error"
HEADER_ATTEMPTS = "x-attempts"
HEADER_ORIGINAL_TOPIC = "x-original-topic"
HEADER_GROUP = "x-consumer-group"


def dlq(topic: str) -> str:
    """The dead-letter topic of `topic`."""
    return topic + DLQ_SUFFIX


def is_dlq(topic: str) -> bool:
    return topic.endswith(DLQ_SUFFIX)
