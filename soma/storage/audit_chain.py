"""The audit log's hash chain: each entry's hash covers its content and the previous hash.

The hash is SHA-256 over `prev_hash + "\\n" + body`, where `body` is the canonical (sorted-key)
JSON of the entry. Python builds the body; the hash may be taken in SQL (PostgreSQL's
`sha256`, SQLite's `soma_chain_hash`) so an append costs no extra round trip.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from soma.core.clock import utcnow

GENESIS_HASH = "0" * 64
SQLITE_HASH_FUNCTION = "soma_chain_hash"
SYSTEM_ACTOR = "system"
"""The audit actor of actions no API key asked for (the pipeline, expiries)."""


def chain_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def entry_hash(prev_hash: str, **entry: Any) -> str:
    """SHA-256 over the previous hash and the canonical body of an `AuditRecord(**entry)`."""
    return chain_hash(prev_hash, AuditRecord(**entry).body)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One consequential action, to be chained in the transaction that performs it."""

    tenant_id: str
    actor: str
    action: str
    resource: str
    data: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)

    @property
    def body(self) -> str:
        """The canonical (sorted-key) JSON the entry's hash covers besides the previous hash."""
        return orjson.dumps(
            {
                "tenant_id": self.tenant_id,
                "actor": self.actor,
                "action": self.action,
                "resource": self.resource,
                "data": self.data,
                "created_at": self.created_at.isoformat(timespec="microseconds"),
            },
            option=orjson.OPT_SORT_KEYS,
        ).decode()
