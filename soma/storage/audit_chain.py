"""The audit log's hash chain: each entry's hash covers its content and the previous hash."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import orjson

GENESIS_HASH = "0" * 64


def entry_hash(
    prev_hash: str,
    *,
    tenant_id: str,
    actor: str,
    action: str,
    resource: str,
    data: dict[str, Any],
    created_at: datetime,
) -> str:
    """SHA-256 over the previous hash and a canonical (sorted-key) JSON of the entry."""
    body = orjson.dumps(
        {
            "tenant_id": tenant_id,
            "actor": actor,
            "action": action,
            "resource": resource,
            "data": data,
            "created_at": created_at.isoformat(timespec="microseconds"),
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + body).hexdigest()
