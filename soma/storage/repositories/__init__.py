"""One repository per aggregate; all bound to a unit of work's connection."""

from soma.storage.repositories.agents import Agent, AgentRepository, AgentSettings
from soma.storage.repositories.api_keys import ApiKey, ApiKeyRepository
from soma.storage.repositories.approvals import Approval, ApprovalRepository
from soma.storage.repositories.audit import (
    AuditEntry,
    AuditFilter,
    AuditRepository,
    AuditVerification,
)
from soma.storage.repositories.base import Page
from soma.storage.repositories.dead_letters import DeadLetter, DeadLetterRepository
from soma.storage.repositories.messages import Message, MessageRepository
from soma.storage.repositories.outbox import OutboxRepository
from soma.storage.repositories.run_events import RunEvent, RunEventRepository
from soma.storage.repositories.runs import Run, RunRepository
from soma.storage.repositories.sessions import Session, SessionRepository
from soma.storage.repositories.tenants import Tenant, TenantRepository
from soma.storage.repositories.tool_calls import ToolCall, ToolCallRepository
from soma.storage.repositories.uploads import Upload, UploadRepository

__all__ = [
    "Agent",
    "AgentRepository",
    "AgentSettings",
    "ApiKey",
    "ApiKeyRepository",
    "Approval",
    "ApprovalRepository",
    "AuditEntry",
    "AuditFilter",
    "AuditRepository",
    "AuditVerification",
    "DeadLetter",
    "DeadLetterRepository",
    "Message",
    "MessageRepository",
    "OutboxRepository",
    "Page",
    "Run",
    "RunEvent",
    "RunEventRepository",
    "RunRepository",
    "Session",
    "SessionRepository",
    "Tenant",
    "TenantRepository",
    "ToolCall",
    "ToolCallRepository",
    "Upload",
    "UploadRepository",
]
