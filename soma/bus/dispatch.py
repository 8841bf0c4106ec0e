"""Runs a handler for one message: retry with backoff, then dead-letter; ack only when done."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping

from soma.bus.metrics import BusMetrics
from soma.bus.port import Delivery, Handler
from soma.bus.topics import (
    HEADER_ATTEMPTS,
    HEADER_ERROR,
    HEADER_GROUP,
    HEADER_ORIGINAL_TOPIC,
    dlq,
)

log = logging.getLogger(__name__)

_ERROR_HEADER_MAX = 1000

DeadLetterPublish = Callable[[str, str, bytes, Mapping[str, str]], Awaitable[None]]


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Delay after the `attempt`-th failure (1-based): base, 2*base, 4*base, ... capped."""
    return float(min(max_s, base_s * 2 ** min(attempt - 1, 30)))


def describe(exc: BaseException) -> str:
    """`Type: message` in one bounded line."""
    name, message = type(exc).__name__, " ".join(str(exc).split())
    text = message if message.startswith(name) else f"{name}: {message}" if message else name
    return text if len(text) <= _ERROR_HEADER_MAX else text[: _ERROR_HEADER_MAX - 1] + "…"


class DeliveryRunner:
    """Drives one consumer group's handler; `run` returns when the message may be acked."""

    def __init__(
        self,
        *,
        group: str,
        handler: Handler,
        publish: DeadLetterPublish,
        metrics: BusMetrics,
        max_attempts: int,
        backoff_base_s: float,
        backoff_max_s: float,
    ) -> None:
        self._group = group
        self._handler = handler
        self._publish = publish
        self._metrics = metrics
        self._max_attempts = max_attempts
        self._base = backoff_base_s
        self._max = backoff_max_s

    async def run(self, delivery: Delivery, abandoned: Callable[[], bool] = lambda: False) -> bool:
        """Handle or dead-letter `delivery`; False when `abandoned()` made it give up unacked."""
        error: BaseException | None = None
        for attempt in range(1, self._max_attempts + 1):
            if abandoned():
                return False
            current = dataclasses.replace(delivery, attempt=attempt)
            try:
                await self._handler(current)
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # The handler cancelled itself (e.g. an inner timeout): a failed attempt.
                error = exc
            except Exception as exc:
                error = exc
            else:
                self._metrics.consumed.labels(delivery.topic, self._group, "ok").inc()
                return True
            if attempt < self._max_attempts:
                self._metrics.consumed.labels(delivery.topic, self._group, "retry").inc()
                log.warning(
                    "bus: handler of group %s failed on %s (attempt %d/%d): %s",
                    self._group, delivery.topic, attempt, self._max_attempts, describe(error),
                )  # fmt: skip
                await asyncio.sleep(backoff_s(attempt, self._base, self._max))
        assert error is not None
        return await self._dead_letter(delivery, error, abandoned)

    async def _dead_letter(
        self, delivery: Delivery, error: BaseException, abandoned: Callable[[], bool]
    ) -> bool:
        headers = {
            **delivery.headers,
            HEADER_ERROR: describe(error),
            HEADER_ATTEMPTS: str(self._max_attempts),
            HEADER_ORIGINAL_TOPIC: delivery.topic,
            HEADER_GROUP: self._group,
        }
        failures = 0
        while True:
            if abandoned():
                return False
            try:
                await self._publish(dlq(delivery.topic), delivery.key, delivery.value, headers)
            except Exception as exc:
                # The message stays unacked until its dead letter is stored.
                failures += 1
                log.warning("bus: cannot dead-letter a message of %s: %s", delivery.topic, exc)
                await asyncio.sleep(backoff_s(failures, self._base, self._max))
                continue
            self._metrics.consumed.labels(delivery.topic, self._group, "dead").inc()
            log.error(
                "bus: message of %s (key %r) dead-lettered by group %s after %d attempts: %s",
                delivery.topic, delivery.key, self._group, self._max_attempts, describe(error),
            )  # fmt: skip
            return True
