"""The run store: a durable run's hot path as a few coarse transactions (ARCHITECTURE §6).

Accept is one transaction, claim plus everything the turn's context needs is one round trip,
and completion is one transaction. Adapters: `soma.storage.runstore_sqlite` (a single writer
thread with group commit) and `soma.storage.runstore_postgres` (asyncpg, one statement per
step where it can).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from soma.bus.port import OutgoingMessage
from soma.runs.events import RunEvent

if TYPE_CHECKING:  # the storage package imports this port's adapters: no import cycle
    from soma.storage.audit_chain import AuditRecord
    from soma.storage.repositories.agents import Agent
    from soma.storage.repositories.messages import Message
    from soma.storage.repositories.runs import Run
    from soma.storage.repositories.sessions import Session


NextRequest = Callable[["Run"], OutgoingMessage]


@dataclass(slots=True)
class StatementCounts:
    """What the hot path has cost the database: for tests of the statement budget."""

    statements: int = 0
    transactions: int = 0
    trips: int = 0
    """Round trips (on SQLite: jobs handed to its connection)."""


"""Builds the request that asks a worker to execute a session's next queued run."""


@dataclass(frozen=True, slots=True)
class Acceptance:
    """A user message and the queued run that answers it; `seq`s are assigned on write."""

    message: Message
    run: Run
    queued: RunEvent
    request: OutgoingMessage
    """Written to the outbox with the rest: relayed to the bus once committed."""
    reject_if_active: bool
    audit: AuditRecord
    """`message.accept` (ids, never the content), chained in the same transaction."""
    new_session: Session | None = None
    """The message's session, to create in the same transaction (it does not exist yet)."""
    prior: Sequence[Message] = ()
    """Earlier messages a caller carries, numbered just before `message` in the same
    transaction (and not written when an idempotency key finds an earlier acceptance)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A worker asking for a run's lease."""

    tenant_id: str
    run_id: str
    owner: str
    now: datetime
    lease_until: datetime
    max_attempts: int
    history_limit: int


@dataclass(frozen=True, slots=True)
class Claimed:
    """A run this worker now leases, with what its context needs."""

    run: Run
    agent: Agent | None
    history: list[Message]
    """The session's newest messages, oldest first."""
    reply_seq: int
    """The message number reserved for this attempt's reply."""
    started: RunEvent | None
    """The attempt's `run.started`, or None when the run is out of attempts (nothing written)."""
    user: str | None = None
    """The end user the session talks to (whose memories the turn recalls)."""


@dataclass(frozen=True, slots=True)
class Completion:
    tenant_id: str
    run_id: str
    usage: dict[str, int]
    finished_at: datetime
    reply: Message
    events: Sequence[RunEvent]
    outbound: OutgoingMessage
    next_request: NextRequest


@dataclass(frozen=True, slots=True)
class Finish:
    """A run that ends without a reply (failed or cancelled)."""

    tenant_id: str
    run_id: str
    status: str
    expected: Collection[str]
    error: str | None
    finished_at: datetime
    event: RunEvent
    next_request: NextRequest
    audit: AuditRecord | None = None
    """Chained in the same transaction when the run moved (a cancel asked for by a caller)."""


class RunStore(Protocol):
    async def accept(self, acceptance: Acceptance) -> Message:
        """Write the new session if any, the prior messages, message, run, `run.queued` and
        the request; returns the message as stored.

        When the message carries an idempotency key already used, nothing is written and the
        message stored under that key comes back instead (its `id` tells them apart).
        NotFoundError: no such live session. ConflictError: `reject_if_active` and the session
        has an unfinished run.
        """
        ...

    async def claim(self, claim: Claim) -> Claimed | None:
        """Lease the run if it is claimable and next in its session; None otherwise."""
        ...

    async def complete(self, completion: Completion) -> Run | None:
        """Finish a running run with its reply; None when it was no longer running."""
        ...

    async def finish(self, finish: Finish) -> Run | None:
        """Move a run in `finish.expected` to `finish.status`; None when it had moved on."""
        ...

    async def renew_leases(
        self, owner: str, run_ids: Collection[str], lease_until: datetime
    ) -> set[str]:
        """Extend the leases this owner still holds; returns the ids that are still ours."""
        ...

    async def hand_back(self, tenant_id: str, run_id: str, owner: str) -> bool:
        """Release a running run's lease and queue it again (shutdown); False if not ours."""
        ...

    async def session_agent(
        self, tenant_id: str, session_id: str
    ) -> tuple[Session, Agent | None] | None:
        """A live session and its agent (None when the agent was deleted)."""
        ...

    async def run_reply(self, tenant_id: str, run_id: str) -> tuple[Run, Message | None] | None:
        """A run and its assistant reply, if any."""
        ...

    async def events_after(
        self, tenant_id: str, run_id: str, after_id: int, limit: int
    ) -> list[RunEvent]:
        """Durable milestones with id > `after_id`, in order."""
        ...


def reply_key(run_id: str) -> str:
    """The idempotency key of a run's reply: a redelivered completion never writes a second."""
    return f"{run_id}:assistant"
