"""Bus port, its local and Kafka adapters (`soma.bus.service.create_bus`), and the outbox relay."""

from soma.bus.outbox import OutboxRecord, OutboxRelay, OutboxStore
from soma.bus.port import Bus, BusError, Delivery, Handler, OutgoingMessage

__all__ = [
    "Bus",
    "BusError",
    "Delivery",
    "Handler",
    "OutboxRecord",
    "OutboxRelay",
    "OutboxStore",
    "OutgoingMessage",
]
