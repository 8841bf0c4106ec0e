"""In-process bus adapter: bounded logs, per-key order, consumer groups, retries and a DLQ."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from soma.bus.dispatch import DeliveryRunner
from soma.bus.keyed import KeyedExecutor
from soma.bus.local_log import GroupCursor, LogRecord, TopicLog
from soma.bus.metrics import BusMetrics
from soma.bus.port import BusError, Delivery, Handler, OutgoingMessage
from soma.config.settings import BusSettings
from soma.core.service import Health, HealthStatus
from soma.observability.metrics import Metrics

log = logging.getLogger(__name__)


class _LocalConsumer:
    """One consumer group on one topic: reads ahead up to `prefetch`, acks contiguously."""

    def __init__(
        self,
        topic: str,
        group: str,
        topic_log: TopicLog,
        runner: DeliveryRunner,
        settings: BusSettings,
        metrics: BusMetrics,
    ) -> None:
        self.topic = topic
        self.group = group
        self._log = topic_log
        self._cursor: GroupCursor = topic_log.join(group)
        self._runner = runner
        self._prefetch = settings.prefetch
        self._metrics = metrics
        self._executor: KeyedExecutor[LogRecord] = KeyedExecutor(settings.concurrency, self._handle)
        self._task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._fetch(), name=f"bus-local:{self.topic}:{self.group}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._executor.cancel()
        self._cursor.rewind()

    async def _fetch(self) -> None:
        cursor = self._cursor
        while True:
            room = self._prefetch - cursor.tracker.in_flight
            batch = self._log.read(cursor, room) if room > 0 else []
            if not batch:
                self._metrics.lag.labels(self.topic, self.group).set(
                    self._log.end - cursor.committed
                )
                cursor.wake.clear()
                await cursor.wake.wait()
                continue
            for record in batch:
                cursor.tracker.add(record.offset)
                self._executor.submit(record.key, record)

    async def _handle(self, record: LogRecord) -> None:
        delivery = Delivery(
            topic=self.topic,
            key=record.key,
            value=record.value,
            headers=record.headers,
            offset=record.offset,
        )
        await self._runner.run(delivery)
        cursor = self._cursor
        if cursor.tracker.complete(record.offset):
            committed = cursor.tracker.committable
            assert committed is not None
            self._log.commit(cursor, committed)
        cursor.wake.set()


class LocalBus:
    """The embedded-mode bus; a `Service` named `bus`. State lives as long as the object."""

    def __init__(self, settings: BusSettings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = BusMetrics(metrics)
        self._logs: dict[str, TopicLog] = {}
        self._consumers: dict[tuple[str, str], _LocalConsumer] = {}
        self._running = False

    @property
    def name(self) -> str:
        return "bus"

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        for topic_log in self._logs.values():
            topic_log.open()
        for consumer in self._consumers.values():
            consumer.start()
        log.info("bus: local bus started")

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        for topic_log in self._logs.values():
            topic_log.close()
        # Unacked deliveries are rewound, so a restart of this bus delivers them again.
        await asyncio.gather(*(c.stop() for c in self._consumers.values()))
        log.info("bus: local bus stopped")

    async def health(self) -> Health:
        if not self._running:
            return Health(HealthStatus.STOPPED, "local bus not running")
        dead = [f"{c.topic}/{c.group}" for c in self._consumers.values() if not c.alive]
        if dead:
            return Health.unhealthy("local consumers not running: " + ", ".join(sorted(dead)))
        return Health.healthy(f"local, {len(self._consumers)} consumer groups")

    def _log(self, topic: str) -> TopicLog:
        topic_log = self._logs.get(topic)
        if topic_log is None:
            topic_log = self._logs[topic] = TopicLog(self._settings.local_capacity)
            if self._running:
                topic_log.open()
        return topic_log

    async def publish(
        self, topic: str, key: str, value: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        if not self._running:
            raise BusError("bus: the local bus is not running")
        await self._log(topic).append(key, value, dict(headers or {}))
        self._metrics.published.labels(topic).inc()

    async def publish_batch(self, messages: Sequence[OutgoingMessage]) -> None:
        for message in messages:
            await self.publish(message.topic, message.key, message.value, message.headers)

    async def subscribe(self, topic: str, group: str, handler: Handler) -> None:
        if (topic, group) in self._consumers:
            raise ValueError(f"bus: group {group!r} already consumes {topic!r} on this bus")
        settings = self._settings
        runner = DeliveryRunner(
            group=group,
            handler=handler,
            publish=self.publish,
            metrics=self._metrics,
            max_attempts=settings.max_attempts,
            backoff_base_s=settings.retry_backoff_s,
            backoff_max_s=settings.retry_backoff_max_s,
        )
        consumer = _LocalConsumer(topic, group, self._log(topic), runner, settings, self._metrics)
        self._consumers[(topic, group)] = consumer
        if self._running:
            consumer.start()
