"""The `dead_letters` service: keeps every message of the `<topic>.dlq` topics as a row.

A letter's id is derived from the message and the group that gave up on it, so a redelivered
dead letter updates its row instead of adding another.
"""

from __future__ import annotations

import hashlib
import logging

import orjson

from soma.bus.port import Bus, Delivery
from soma.bus.topics import (
    HEADER_ATTEMPTS,
    HEADER_ERROR,
    HEADER_GROUP,
    HEADER_ORIGINAL_TOPIC,
    TOPICS,
    dlq,
)
from soma.core.service import Health, HealthStatus
from soma.storage.database import Database

_log = logging.getLogger("soma.dlq")
GROUP = "dead-letters"
DLQ_HEADERS = frozenset({HEADER_ERROR, HEADER_ATTEMPTS, HEADER_ORIGINAL_TOPIC, HEADER_GROUP})
"""Headers the dead-lettering added; a replay publishes the message without them."""


def letter_id(topic: str, group: str, key: str, payload: bytes) -> str:
    digest = hashlib.sha256(b"\0".join([topic.encode(), group.encode(), key.encode(), payload]))
    return digest.hexdigest()[:32]


def tenant_of(payload: bytes) -> str | None:
    """The envelope's tenant, if the payload is one (a poison message may not be)."""
    try:
        envelope = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    tenant = envelope.get("tenant_id") if isinstance(envelope, dict) else None
    return tenant[:64] if isinstance(tenant, str) and tenant else None


class DeadLetterService:
    def __init__(self, bus: Bus, database: Database) -> None:
        self._bus = bus
        self._database = database
        self._started = False

    @property
    def name(self) -> str:
        return "dead_letters"

    async def start(self) -> None:
        for topic in TOPICS:
            await self._bus.subscribe(dlq(topic), GROUP, self._keep)
        self._started = True

    async def stop(self) -> None:
        self._started = False

    async def health(self) -> Health:
        if self._started:
            return Health.healthy("recording")
        return Health(HealthStatus.STOPPED, "not started")

    async def _keep(self, delivery: Delivery) -> None:
        headers = dict(delivery.headers)
        topic = headers.get(HEADER_ORIGINAL_TOPIC) or delivery.topic.removesuffix(".dlq")
        group = headers.get(HEADER_GROUP, "")
        try:
            attempts = int(headers.get(HEADER_ATTEMPTS, "1"))
        except ValueError:
            attempts = 1
        async with self._database.transaction() as uow:
            await uow.dead_letters.record(
                letter_id(topic, group, delivery.key, delivery.value),
                topic=topic,
                key=delivery.key,
                payload=delivery.value,
                headers=headers,
                error=headers.get(HEADER_ERROR, "unknown error"),
                attempts=attempts,
                tenant_id=tenant_of(delivery.value),
            )
        _log.info("dead letter of %s kept (group %s)", topic, group)
