"""The Bus port: keyed publish, consumer groups with explicit acks, retries and a DLQ."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from soma.core.service import Health


class BusError(Exception):
    """A publish was not accepted (bus stopped, broker unreachable or refusing)."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    topic: str
    key: str
    value: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of a message to a handler; `attempt` counts from 1 within this consumer."""

    topic: str
    key: str
    value: bytes
    headers: Mapping[str, str]
    attempt: int = 1
    partition: int | None = None
    offset: int | None = None


Handler = Callable[[Delivery], Awaitable[None]]
"""Returning acks the delivery; raising retries it, then dead-letters it."""


@runtime_checkable
class Bus(Protocol):
    """At-least-once, per-key ordered messaging; also a `Service` named `bus`."""

    @property
    def name(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def health(self) -> Health: ...

    async def publish(
        self, topic: str, key: str, value: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """Return once the message is durably accepted; raise `BusError` otherwise."""
        ...

    async def publish_batch(self, messages: Sequence[OutgoingMessage]) -> None:
        """Return once all are accepted, keeping their order per key; raise `BusError` otherwise."""
        ...

    async def subscribe(self, topic: str, group: str, handler: Handler) -> None:
        """Register a consumer group; it consumes from when the bus runs until it stops."""
        ...
