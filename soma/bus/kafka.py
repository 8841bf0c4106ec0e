"""Kafka bus adapter (aiokafka): idempotent acks=all producer, one consumer per subscription."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from soma.bus.dispatch import DeliveryRunner, describe
from soma.bus.kafka_consumer import KafkaGroupConsumer
from soma.bus.metrics import BusMetrics
from soma.bus.port import BusError, Handler, OutgoingMessage
from soma.bus.topics import TOPICS, dlq, is_dlq
from soma.config.settings import BusSettings
from soma.core.errors import StartupError
from soma.core.ids import new_id
from soma.core.service import Health, HealthStatus
from soma.observability.metrics import Metrics

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 10.0
_HEALTH_TIMEOUT_S = 5.0
_LINGER_MS = 5
_TOPIC_EXISTS = 36


class _ProducerRefused(Exception):
    """The broker answered but would not accept our producer."""


class KafkaBus:
    """The distributed-mode bus; a `Service` named `bus`."""

    def __init__(self, settings: BusSettings, metrics: Metrics) -> None:
        self._settings = settings
        self._kafka = settings.kafka
        self._metrics = BusMetrics(metrics)
        self._client_id = f"soma-{new_id()[:12]}"
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._known_topics: set[str] = set()
        self._topics_lock = asyncio.Lock()
        self._subscriptions: dict[tuple[str, str], Handler] = {}
        self._consumers: dict[tuple[str, str], KafkaGroupConsumer] = {}

    @property
    def name(self) -> str:
        return "bus"

    def physical(self, topic: str) -> str:
        """The broker's name for a logical topic."""
        return self._kafka.topic_prefix + topic

    async def start(self) -> None:
        if self._producer is not None:
            return
        servers = self._kafka.bootstrap_servers
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                await self._connect()
                for topic, group in self._subscriptions:
                    await self._start_consumer(topic, group)
        except _ProducerRefused as exc:
            await self.stop()
            raise StartupError(f"bus: kafka at {servers}: {exc}") from exc
        except (KafkaError, OSError, TimeoutError, BusError) as exc:
            await self.stop()
            reason = describe(exc)
            if isinstance(exc, TimeoutError):
                reason = f"no answer within {_START_TIMEOUT_S:.0f} s"
            raise StartupError(f"bus: cannot reach kafka at {servers}: {reason}") from exc
        log.info("bus: kafka bus started (%s, prefix %r)", servers, self._kafka.topic_prefix)

    async def _connect(self) -> None:
        kafka = self._kafka
        admin = AIOKafkaAdminClient(
            bootstrap_servers=kafka.bootstrap_servers,
            client_id=self._client_id,
            request_timeout_ms=kafka.request_timeout_ms,
        )
        self._admin = admin
        await admin.start()
        await self._ensure_topics([*TOPICS, *map(dlq, TOPICS)])
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap_servers,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=kafka.idempotent_producer,
            linger_ms=_LINGER_MS,
            request_timeout_ms=kafka.request_timeout_ms,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            hint = ""
            if kafka.idempotent_producer:
                hint = " (an idempotent producer needs InitProducerId support from the broker)"
            raise _ProducerRefused(f"the producer was refused{hint}: {describe(exc)}") from exc
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        consumers = list(self._consumers.values())
        self._consumers.clear()
        await asyncio.gather(*(c.stop() for c in consumers), return_exceptions=True)
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.close()
        self._known_topics.clear()

    async def health(self) -> Health:
        producer = self._producer
        if producer is None:
            return Health(HealthStatus.STOPPED, "kafka bus not running")
        try:
            async with asyncio.timeout(_HEALTH_TIMEOUT_S):
                await producer.client.fetch_all_metadata()
        except (KafkaError, OSError, TimeoutError) as exc:
            return Health.unhealthy(
                f"kafka at {self._kafka.bootstrap_servers}: metadata request failed: "
                f"{describe(exc)}"
            )
        dead = [f"{c.topic}/{c.group}" for c in self._consumers.values() if not c.alive]
        if dead:
            return Health.unhealthy("kafka consumers not running: " + ", ".join(sorted(dead)))
        servers, groups = self._kafka.bootstrap_servers, len(self._consumers)
        return Health.healthy(f"kafka {servers}, {groups} consumer groups")

    async def _ensure_topics(self, topics: Iterable[str]) -> None:
        """Create missing topics (and their DLQs) with the configured partitions."""
        wanted = {name for t in topics for name in ((t,) if is_dlq(t) else (t, dlq(t)))}
        missing = sorted({self.physical(t) for t in wanted} - self._known_topics)
        if not missing:
            return
        admin = self._admin
        if admin is None:
            raise BusError("bus: the kafka bus is not running")
        async with self._topics_lock:
            missing = [t for t in missing if t not in self._known_topics]
            if not missing:
                return
            partitions, replicas = self._kafka.partitions, self._kafka.replication_factor
            new = [NewTopic(t, partitions, replicas) for t in missing]
            response = await admin.create_topics(new)
            for name, code, message in (e[:3] for e in response.topic_errors):
                if code not in (0, _TOPIC_EXISTS):
                    raise BusError(f"bus: cannot create topic {name}: error {code} {message}")
            self._known_topics.update(missing)

    async def publish(
        self, topic: str, key: str, value: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        await self.publish_batch([OutgoingMessage(topic, key, value, headers or {})])

    async def publish_batch(self, messages: Sequence[OutgoingMessage]) -> None:
        producer = self._producer
        if producer is None:
            raise BusError("bus: the kafka bus is not running")
        if not messages:
            return
        try:
            # aiokafka keeps retrying an unreachable broker past its request timeout: bound it.
            async with asyncio.timeout(self._kafka.request_timeout_ms / 1000):
                await self._ensure_topics({m.topic for m in messages})
                # `send` enqueues in call order, so per-key (per-partition) order is kept.
                futures = [
                    await producer.send(
                        self.physical(m.topic),
                        value=m.value,
                        key=m.key.encode(),
                        headers=[(k, v.encode()) for k, v in m.headers.items()],
                    )
                    for m in messages
                ]
                await asyncio.gather(*futures)
        except (KafkaError, OSError) as exc:
            # The broker may have lost topics (a restarted broker, a deleted topic): recheck.
            self._known_topics.clear()
            reason = describe(exc)
            if isinstance(exc, TimeoutError) and not str(exc):
                reason = f"no acknowledgement within {self._kafka.request_timeout_ms} ms"
            raise BusError(f"bus: kafka did not accept the messages: {reason}") from exc
        for message in messages:
            self._metrics.published.labels(message.topic).inc()

    async def subscribe(self, topic: str, group: str, handler: Handler) -> None:
        if (topic, group) in self._subscriptions:
            raise ValueError(f"bus: group {group!r} already consumes {topic!r} on this bus")
        self._subscriptions[(topic, group)] = handler
        if self._producer is not None:
            try:
                await self._start_consumer(topic, group)
            except (KafkaError, OSError) as exc:
                del self._subscriptions[(topic, group)]
                raise BusError(f"bus: cannot join group {group} on {topic}: {exc}") from exc

    async def _start_consumer(self, topic: str, group: str) -> None:
        await self._ensure_topics([topic])
        settings = self._settings
        runner = DeliveryRunner(
            group=group,
            handler=self._subscriptions[(topic, group)],
            publish=self.publish,
            metrics=self._metrics,
            max_attempts=settings.max_attempts,
            backoff_base_s=settings.retry_backoff_s,
            backoff_max_s=settings.retry_backoff_max_s,
        )
        consumer = KafkaGroupConsumer(
            topic=topic,
            physical_topic=self.physical(topic),
            group=group,
            runner=runner,
            settings=settings,
            metrics=self._metrics,
            client_id=self._client_id,
        )
        await consumer.start()
        self._consumers[(topic, group)] = consumer
