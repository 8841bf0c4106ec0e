"""One Kafka consumer group member: keyed dispatch, contiguous commits, rebalance safety."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from soma.bus.dispatch import DeliveryRunner
from soma.bus.keyed import KeyedExecutor
from soma.bus.metrics import BusMetrics
from soma.bus.offsets import OffsetTracker
from soma.bus.port import Delivery
from soma.config.settings import BusSettings

log = logging.getLogger(__name__)

_POLL_MS = 200
_COMMIT_EVERY_S = 0.05
_LAG_EVERY_S = 1.0
_REVOKE_GRACE_S = 3.0
_FETCH_RETRY_S = 1.0


@dataclass(eq=False)
class _Partition:
    """State of one assignment of one partition; a reassignment gets a fresh one."""

    tracker: OffsetTracker = field(default_factory=OffsetTracker)
    closing: bool = False
    """Being revoked: start nothing new, let running handlers finish within the grace period."""
    revoked: bool = False
    """Revoked: results no longer count (the new owner gets the messages again)."""
    first: int | None = None
    committed: int | None = None


@dataclass(frozen=True, slots=True)
class _Item:
    tp: TopicPartition
    state: _Partition
    delivery: Delivery


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: KafkaGroupConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner.revoke(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._owner.assign(assigned)


class KafkaGroupConsumer:
    """Consumes one topic for one group; acks only what handlers completed, contiguously."""

    def __init__(
        self,
        *,
        topic: str,
        physical_topic: str,
        group: str,
        runner: DeliveryRunner,
        settings: BusSettings,
        metrics: BusMetrics,
        client_id: str,
    ) -> None:
        self.topic = topic
        self.group = group
        self._physical = physical_topic
        self._runner = runner
        self._settings = settings
        self._metrics = metrics
        self._client_id = client_id
        self._executor: KeyedExecutor[_Item] = KeyedExecutor(settings.concurrency, self._handle)
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._commit_wanted = asyncio.Event()
        self._progress = asyncio.Event()
        self._completed = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._paused = False

    @property
    def alive(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    async def start(self) -> None:
        kafka = self._settings.kafka
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=self.group,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=kafka.heartbeat_interval_ms,
            rebalance_timeout_ms=kafka.rebalance_timeout_ms,
            request_timeout_ms=max(kafka.request_timeout_ms, kafka.session_timeout_ms + 1000),
            max_poll_records=self._settings.prefetch,
            fetch_max_wait_ms=kafka.fetch_max_wait_ms,
        )
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        consumer.subscribe([self._physical], listener=_Listener(self))
        self._consumer = consumer
        name = f"{self.topic}/{self.group}"
        self._tasks = [
            asyncio.create_task(self._fetch(consumer), name=f"bus-kafka-fetch:{name}"),
            asyncio.create_task(self._commit_loop(), name=f"bus-kafka-commit:{name}"),
        ]

    async def stop(self) -> None:
        """Stop fetching, cancel in-flight handlers, commit what completed, leave the group."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._executor.cancel()
        if self._consumer is not None:
            await self._commit(set(self._partitions))
            for state in self._partitions.values():
                state.revoked = True
            self._partitions.clear()
            await self._consumer.stop()
            self._consumer = None

    def assign(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self._partitions[tp] = _Partition()
        log.info("bus: group %s got %s", self.group, sorted(tp.partition for tp in assigned))

    async def revoke(self, revoked: set[TopicPartition]) -> None:
        """Give running handlers a moment, commit the contiguous done part, drop the rest."""
        states = [self._partitions[tp] for tp in revoked if tp in self._partitions]
        for state in states:
            state.closing = True
        grace = min(_REVOKE_GRACE_S, self._settings.kafka.rebalance_timeout_ms / 2000)
        deadline = time.monotonic() + grace
        while self._running_in(states) and time.monotonic() < deadline:
            self._progress.clear()
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self._progress.wait()
            except TimeoutError:
                break
        await self._commit(set(revoked))
        for state in states:
            state.revoked = True
        for tp in revoked:
            self._partitions.pop(tp, None)
        # The new owner gets these again from the committed offset; stop working on them here.
        dropped = self._executor.drop(lambda item: item.state.revoked)
        if dropped:
            log.info("bus: group %s handed back %d unfinished messages", self.group, dropped)

    def _running_in(self, states: list[_Partition]) -> bool:
        return any(item.state in states for item in self._executor.running())

    async def _fetch(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            if self._paused:
                # Resume as soon as handlers catch up instead of after a whole empty poll.
                self._completed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_POLL_MS / 1000):
                        await self._completed.wait()
                self._flow_control(consumer)
            try:
                batches = await consumer.getmany(timeout_ms=0 if self._paused else _POLL_MS)
            except KafkaError as exc:
                # Broker trouble is retried here; health reports it through metadata requests.
                log.warning("bus: fetch for group %s on %s failed: %s", self.group, self.topic, exc)
                await asyncio.sleep(_FETCH_RETRY_S)
                continue
            for tp, records in batches.items():
                state = self._partitions.get(tp)
                if state is None:
                    continue
                for record in records:
                    last = state.tracker.last_added
                    if last is not None and record.offset <= last:
                        # Re-fetched after an offset reset: that record is already in hand.
                        continue
                    state.tracker.add(record.offset)
                    if state.first is None:
                        state.first = record.offset
                    headers = {
                        k: (v or b"").decode("utf-8", "replace") for k, v in record.headers or ()
                    }
                    key = record.key.decode("utf-8", "replace") if record.key else ""
                    delivery = Delivery(
                        topic=self.topic,
                        key=key,
                        value=record.value or b"",
                        headers=headers,
                        partition=tp.partition,
                        offset=record.offset,
                    )
                    self._executor.submit(key, _Item(tp, state, delivery))
            self._flow_control(consumer)

    def _flow_control(self, consumer: AIOKafkaConsumer) -> None:
        in_flight = sum(s.tracker.in_flight for s in self._partitions.values())
        if in_flight >= self._settings.prefetch:
            # Rebalances hand out unpaused partitions, so pause the whole assignment every time.
            consumer.pause(*consumer.assignment())
            self._paused = True
        elif self._paused and in_flight <= self._settings.prefetch // 2:
            consumer.resume(*consumer.paused())
            self._paused = False

    async def _handle(self, item: _Item) -> None:
        state = item.state
        if state.closing or state.revoked:
            return
        acked = await self._runner.run(item.delivery, abandoned=lambda: state.closing)
        offset = item.delivery.offset
        assert offset is not None
        if acked and not state.revoked and state.tracker.complete(offset):
            self._commit_wanted.set()
        self._progress.set()
        self._completed.set()

    async def _commit_loop(self) -> None:
        last_lag = 0.0
        while True:
            try:
                async with asyncio.timeout(_LAG_EVERY_S):
                    await self._commit_wanted.wait()
            except TimeoutError:
                pass
            self._commit_wanted.clear()
            await self._commit(set(self._partitions))
            if time.monotonic() - last_lag >= _LAG_EVERY_S:
                self._update_lag()
                last_lag = time.monotonic()
            await asyncio.sleep(_COMMIT_EVERY_S)

    async def _commit(self, tps: set[TopicPartition]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        async with self._commit_lock:
            offsets: dict[TopicPartition, int] = {}
            for tp in tps:
                state = self._partitions.get(tp)
                position = state.tracker.committable if state is not None else None
                if state is not None and position is not None and position != state.committed:
                    offsets[tp] = position
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except KafkaError as exc:
                # Typically a rebalance in progress: uncommitted work is redelivered, never lost.
                log.warning("bus: commit of group %s on %s failed: %s", self.group, self.topic, exc)
                return
            for tp, position in offsets.items():
                state = self._partitions.get(tp)
                if state is not None:
                    state.committed = max(position, state.committed or 0)

    def _update_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        lag = 0
        for tp, state in self._partitions.items():
            # The highwater comes from fetch responses, not from ListOffsets (unreliable on tansu).
            highwater = consumer.highwater(tp)
            position = state.committed if state.committed is not None else state.first
            if highwater is not None and position is not None:
                lag += max(0, highwater - position)
        self._metrics.lag.labels(self.topic, self.group).set(lag)
