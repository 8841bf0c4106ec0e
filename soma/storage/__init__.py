"""Storage: async SQLAlchemy engine, schema, migrations, repositories, outbox store."""

from soma.storage.database import Database
from soma.storage.engine import create_engine, describe_url
from soma.storage.metrics import StorageMetrics
from soma.storage.migrate import current_revision, head_revision, migrate
from soma.storage.outbox_signal import OutboxSignal
from soma.storage.outbox_store import SqlOutboxStore
from soma.storage.service import DatabaseService
from soma.storage.uow import UnitOfWork

__all__ = [
    "Database",
    "DatabaseService",
    "OutboxSignal",
    "SqlOutboxStore",
    "StorageMetrics",
    "UnitOfWork",
    "create_engine",
    "current_revision",
    "describe_url",
    "head_revision",
    "migrate",
]
