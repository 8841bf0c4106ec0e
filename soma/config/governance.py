"""Settings of tenants' limits and of uploads."""

from __future__ import annotations

from pydantic import Field

from soma.config.section import Section


class LimitsSettings(Section):
    """Defaults of every tenant's limits (ARCHITECTURE §9); `PATCH /v1/admin/tenants/{id}`
    overrides them per tenant at run time."""

    key_requests_per_s: float = Field(default=1_000.0, ge=0.001)
    """Requests per second of one API key, on average (token bucket), on every route."""
    key_burst: int = Field(default=2_000, ge=1)
    """Requests one key may make at once above its average rate (the bucket's size)."""
    tenant_requests_per_s: float = Field(default=5_000.0, ge=0.001)
    """Requests per second of all of a tenant's keys together."""
    tenant_burst: int = Field(default=10_000, ge=1)
    """Requests a tenant's keys may make at once above the tenant's average rate."""
    max_inflight_runs: int = Field(default=10_000, ge=1)
    """Unfinished runs (queued or running) per tenant; a message beyond it gets 429."""
    token_budget: int | None = Field(default=None, ge=1)
    """LLM tokens (prompt + completion) per tenant per `token_window_s`; `None`: unlimited."""
    token_window_s: int = Field(default=86_400, ge=60)
    """Length of the window a `token_budget` counts over, in seconds."""
    inflight_ttl_s: float = Field(default=86_400.0, gt=0)
    """A run counted in flight for this long without finishing stops counting (a replica that
    died between counting and writing a run cannot hold a slot forever)."""
    cache_ttl_s: float = Field(default=1.0, ge=0, le=60)
    """How long a replica reuses a tenant's limits: a change reaches other replicas this soon."""


class UploadsSettings(Section):
    """Uploads (`/v1/uploads`) and the attachments they give messages."""

    max_file_bytes: int = Field(default=25 * 1024 * 1024, ge=1)
    """Largest upload; a larger one gets 413 and nothing is kept."""
    max_files_per_tenant: int = Field(default=1_000, ge=1)
    """Uploads a tenant may keep; one more gets 409 until some are deleted."""
    max_bytes_per_tenant: int = Field(default=1024 * 1024 * 1024, ge=1)
    """Bytes a tenant's uploads may take together (the same bytes count once)."""
    allowed_types: list[str] = [
        "text/plain",
        "text/markdown",
        "text/csv",
        "application/json",
        "application/pdf",
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
    ]
    """Content types (sniffed from the bytes) an upload may have; others get 415."""
    attachment_tokens: int = Field(default=4_000, ge=0)
    """Tokens of extracted attachment text a turn's context may take."""
