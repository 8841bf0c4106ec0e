"""The unit of work: every repository bound to one connection and its transaction."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from soma.storage.repositories import (
    AgentRepository,
    ApiKeyRepository,
    ApprovalRepository,
    AuditRepository,
    DeadLetterRepository,
    MessageRepository,
    OutboxRepository,
    RunEventRepository,
    RunRepository,
    SessionRepository,
    TenantRepository,
    ToolCallRepository,
    UploadRepository,
)


class UnitOfWork:
    """Created by `Database.transaction()` / `Database.read()`; not shared across tasks."""

    __slots__ = (
        "agents",
        "api_keys",
        "approvals",
        "audit",
        "connection",
        "dead_letters",
        "messages",
        "outbox",
        "run_events",
        "runs",
        "sessions",
        "tenants",
        "tool_calls",
        "uploads",
    )

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection
        self.tenants = TenantRepository(connection)
        self.api_keys = ApiKeyRepository(connection)
        self.agents = AgentRepository(connection)
        self.sessions = SessionRepository(connection)
        self.messages = MessageRepository(connection)
        self.runs = RunRepository(connection)
        self.run_events = RunEventRepository(connection)
        self.tool_calls = ToolCallRepository(connection)
        self.approvals = ApprovalRepository(connection)
        self.uploads = UploadRepository(connection)
        self.outbox = OutboxRepository(connection)
        self.audit = AuditRepository(connection)
        self.dead_letters = DeadLetterRepository(connection)
