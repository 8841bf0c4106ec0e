"""The one configuration model of the platform (ARCHITECTURE §4)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from soma.config.governance import LimitsSettings, UploadsSettings
from soma.config.memory import MemorySettings
from soma.config.section import Section
from soma.config.tools import ToolsSettings


class HttpSettings(Section):
    host: str = "127.0.0.1"
    """Address the one HTTP listener binds (`0.0.0.0` in containers)."""
    port: int = Field(default=8080, ge=0, le=65535)
    """Port of the one HTTP listener (API, `/v1/health`, `/metrics`); 0 picks a free one."""
    max_body_bytes: int = Field(default=1_048_576, ge=1_024)
    """Largest request body on any route; larger ones get 413 before they are read."""
    max_header_bytes: int = Field(default=32_768, ge=1_024)
    """Request line plus headers; more gets 431 before they are buffered."""
    max_headers: int = Field(default=100, ge=8, le=10_000)
    """Most header lines one request may carry; more gets 431."""
    header_timeout_s: float = Field(default=10.0, gt=0)
    """A connection must deliver a request's complete headers this soon (slow-loris bound)."""
    body_timeout_s: float = Field(default=30.0, gt=0)
    """And the complete body this soon after its headers."""
    keep_alive_s: int = Field(default=5, ge=1, le=3_600)
    """How long an idle keep-alive connection stays open."""
    max_connections: int = Field(default=4_096, ge=16)
    """Open connections served in full; beyond, idle ones are closed to make room."""
    health_headroom: int = Field(default=64, ge=1, le=10_000)
    """Connections over `max_connections` that may still reach `/v1/health*` (probes)."""
    docs: bool = True
    """Serve `/docs` and `/openapi.json`."""
    console: bool = True
    """Serve the web console at `/` (static files; its API calls carry the user's key)."""
    reuse_port: bool = False
    """Bind with SO_REUSEPORT, so several API replicas on one host share `port` (the kernel
    spreads connections over them; see docs/architecture.md, "Process shapes")."""


class DatabaseSettings(Section):
    url: SecretStr | None = None
    """`None` means the SQLite file in `data_dir`; a URL may carry a password, hence secret."""
    pool_size: int = Field(default=10, ge=1, le=500)
    """Connections per process to the database."""
    echo: bool = False
    """Log every SQL statement (debugging only)."""


class KafkaSettings(Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma list of Kafka brokers (`host:port`)."""
    topic_prefix: str = "soma."
    """Prefix of every topic the platform uses (several platforms may share a cluster)."""
    partitions: int = Field(default=6, ge=1, le=1024)
    """Partitions of each topic the platform creates."""
    replication_factor: int = Field(default=1, ge=1, le=16)
    """Replicas of each topic the platform creates (3 on a production cluster)."""
    session_timeout_ms: int = Field(default=10_000, ge=500)
    """Consumer group session timeout: a silent consumer is dropped after this."""
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    """How often consumers heartbeat to the group coordinator."""
    rebalance_timeout_ms: int = Field(default=10_000, ge=500)
    """How long a rebalance waits for members to rejoin."""
    request_timeout_ms: int = Field(default=10_000, ge=500)
    """Bound on one produce/metadata round trip, so a dead broker surfaces as an error."""
    idempotent_producer: bool = True
    """Off only for brokers without InitProducerId v0 (the tansu test broker)."""
    fetch_max_wait_ms: int = Field(default=500, ge=1, le=60_000)
    """Longest a fetch waits for data. Kafka answers as soon as data arrives; brokers that
    do not (tansu) add up to this much latency per hop, so lower it for them."""


class BusSettings(Section):
    backend: Literal["local", "kafka"] = "local"
    """`local` (in-process, one replica) or `kafka`."""
    max_attempts: int = Field(default=5, ge=1, le=100)
    """Deliveries of one message before it goes to `<topic>.dlq`."""
    concurrency: int = Field(default=64, ge=1, le=10_000)
    """Keys processed at once per consumer group."""
    prefetch: int = Field(default=1_000, ge=1, le=1_000_000)
    """Messages fetched but not yet acked per consumer group before fetching pauses."""
    retry_backoff_s: float = Field(default=0.2, gt=0)
    """First wait before a failed message is delivered again; doubles per attempt."""
    retry_backoff_max_s: float = Field(default=10.0, gt=0)
    """Longest wait between deliveries of a failing message."""
    local_capacity: int = Field(default=10_000, ge=1, le=10_000_000)
    """Messages a local topic holds before publishers wait for its slowest consumer group."""
    kafka: KafkaSettings = KafkaSettings()


class OutboxSettings(Section):
    batch_size: int = Field(default=500, ge=1, le=10_000)
    """Events the relay publishes per round."""
    poll_interval_s: float = Field(default=1.0, gt=0)
    """How often the relay looks for unpublished events when no commit signals it."""
    retry_max_s: float = Field(default=10.0, gt=0)
    """Longest wait before the relay retries after the bus refused a batch."""
    retention_s: float = Field(default=3600.0, ge=0)
    """How long published events stay in the outbox table before they are deleted."""


class CacheSettings(Section):
    url: SecretStr = SecretStr("memory://")
    """`memory://` (in-process) or `redis://host:port/db`; may carry a password, hence secret."""
    max_connections: int = Field(default=64, ge=1, le=10_000)
    """Connections per process to Redis."""
    stream_maxlen: int = Field(default=10_000, ge=10)
    """Events kept per run stream (SSE replay window)."""
    stream_ttl_s: int = Field(default=3600, ge=1)
    """Lifetime of a run stream without new events."""
    stream_grace_s: float = Field(default=30.0, gt=0)
    """How long a finished run's stream stays after its terminal event (milestones are durable)."""
    stream_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """In-process streams only: all streams together; the oldest finished ones go first."""


class PolicySettings(Section):
    engine: Literal["embedded", "opa"] = "embedded"
    """`embedded` (Rego in process) or `opa` (an OPA server's REST Data API)."""
    opa_url: str = "http://127.0.0.1:8181"
    """Base URL of the OPA server (engine `opa`)."""
    timeout_s: float = Field(default=2.0, gt=0)
    """Bound on one policy decision; a timeout is a deny (fail closed)."""
    rego_dir: Path | None = None
    """Directory of `.rego` files; `None` means the policies shipped in `soma/policy/rego`."""


class ModelSettings(Section):
    provider: Literal["openai", "local"]
    """`openai` (any OpenAI-compatible HTTP endpoint) or `local` (llama.cpp in process)."""
    base_url: str | None = None
    """Endpoint of an `openai` provider, e.g. `https://api.example.com/v1`."""
    model: str | None = None
    """Model name sent upstream; unset: the entry's own name."""
    api_key: SecretStr | None = None
    """Bearer key of an `openai` provider."""
    timeout_s: float = Field(default=60.0, gt=0)
    """Bound on one upstream request."""
    fallbacks: list[str] = []
    """Models tried, in order, when this one is unavailable."""
    path: Path | None = None
    """GGUF file for the local provider; `None` means the bundled SmolLM2."""
    context_tokens: int = Field(default=8192, ge=256)
    """Context window the platform fits prompts into."""
    max_concurrency: int = Field(default=1, ge=1, le=64)
    """Requests this model serves at once per process (the rest wait)."""

    @model_validator(mode="after")
    def _openai_needs_url(self) -> ModelSettings:
        if self.provider == "openai" and not self.base_url:
            raise ValueError("an openai provider needs base_url")
        return self


def _default_models() -> dict[str, ModelSettings]:
    return {"local": ModelSettings(provider="local", context_tokens=2048)}


class LLMSettings(Section):
    default_model: str = "local"
    """The model of every tenant's default agent `assistant` (a key of `llm.models`)."""
    models: dict[str, ModelSettings] = Field(default_factory=_default_models)
    """Named models; `local` (the bundled SmolLM2) is always declared."""
    retries: int = Field(default=2, ge=0, le=10)
    """Retries of a failed upstream request before its first token."""
    breaker_failures: int = Field(default=5, ge=1)
    """Consecutive failures that open a model's circuit breaker."""
    breaker_reset_s: float = Field(default=30.0, gt=0)
    """How long an open breaker waits before it lets a trial request through."""
    retry_window_s: float = Field(default=120.0, ge=0)
    """How long a request waits out transient upstream failures (before its first token)."""
    retry_backoff_max_s: float = Field(default=5.0, gt=0)
    """Longest wait between two retries of one request."""
    retry_after_max_s: float = Field(default=30.0, gt=0)
    """Longest `Retry-After` honoured per wait; longer ones are cut to this."""
    probe_interval_s: float = Field(default=0.5, gt=0)
    """While a model's breaker is open, how often its upstream is probed (no tokens spent)."""

    @field_validator("models", mode="before")
    @classmethod
    def _lower_names(cls, value: Any) -> Any:
        # Declared models join the built-in `local` one rather than replacing it.
        if isinstance(value, dict):
            return {**_default_models(), **{str(k).lower(): v for k, v in value.items()}}
        return value

    @model_validator(mode="after")
    def _default_is_declared(self) -> LLMSettings:
        self.default_model = self.default_model.lower()
        if self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} is not in llm.models")
        for name, model in self.models.items():
            for fallback in model.fallbacks:
                if fallback.lower() not in self.models:
                    raise ValueError(f"models.{name}.fallbacks names unknown model {fallback!r}")
        return self


class AuthSettings(Section):
    bootstrap_key_file: Path | None = None
    """`None` means `<data_dir>/admin.key`."""
    key_cache_ttl_s: float = Field(default=5.0, ge=0)
    """How long a verified API key is cached in the shared cache (0 disables)."""
    negative_cache_ttl_s: float = Field(default=10.0, ge=0)
    """How long an unknown key prefix is remembered as unknown (shared cache; 0 disables)."""
    local_cache_ttl_s: float = Field(default=0.5, ge=0, le=5)
    """In-process cache in front of the shared one; a revocation reaches other replicas after
    at most this long (the revoking replica drops its own entry at once). 0 disables."""
    local_cache_size: int = Field(default=10_000, ge=1, le=1_000_000)
    """Entries of the in-process key cache."""
    failed_auth_rate_per_s: float = Field(default=10.0, gt=0)
    """Failed authentications per client address and second, on average, before 429."""
    failed_auth_burst: int = Field(default=100, ge=1, le=1_000_000)
    """Failed authentications a client address may make at once before 429."""


class ObservabilitySettings(Section):
    log_format: Literal["json", "text"] = "json"
    """`json` (one object per line) or `text`."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level logged."""
    otlp_endpoint: str | None = None
    """OTLP/HTTP collector for traces (e.g. `http://otel-collector:4318`); unset: tracing off."""
    access_log: bool = True
    """Log one line per HTTP request."""


class RuntimeSettings(Section):
    max_concurrent_runs: int = Field(default=64, ge=1, le=10_000)
    """Runs one worker process executes at once."""
    lease_s: float = Field(default=30.0, gt=0)
    """A worker's claim on a run; another may take the run over when it lapses."""
    max_attempts: int = Field(default=3, ge=1, le=100)
    """Attempts of one run (after crashes or hand-backs) before it fails."""
    recovery_interval_s: float = Field(default=5.0, gt=0)
    """How often the recovery service sweeps for lapsed leases and stuck runs."""
    requeue_after_s: float = Field(default=60.0, gt=0)
    """A queued run not started this long after its request was published is requested again."""
    drain_timeout_s: float = Field(default=10.0, ge=0)
    """On shutdown, how long in-flight runs may finish before they are handed back."""
    sse_heartbeat_s: float = Field(default=15.0, gt=0)
    """Comment line sent on idle event streams to keep proxies from closing them."""
    agent_cache_ttl_s: float = Field(default=1.0, ge=0, le=60)
    """How long a gateway reuses an agent it looked up to accept a message (0: never cache):
    an agent edit reaches other replicas' accepts within this long."""


class Settings(BaseSettings):
    """Effective configuration; build it with `soma.config.load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="SOMA_",
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    data_dir: Path = Path(".soma")
    """SQLite file, uploads, bootstrap admin key and workspaces (a volume in containers)."""
    services: Annotated[list[str] | None, NoDecode] = None
    """Services this replica runs (plus their dependencies); `None` means all."""
    shutdown_timeout: float = Field(default=20.0, gt=0)
    """Seconds a graceful stop may take before the remaining work is handed back."""
    http: HttpSettings = HttpSettings()
    database: DatabaseSettings = DatabaseSettings()
    bus: BusSettings = BusSettings()
    outbox: OutboxSettings = OutboxSettings()
    cache: CacheSettings = CacheSettings()
    policy: PolicySettings = PolicySettings()
    llm: LLMSettings = LLMSettings()
    auth: AuthSettings = AuthSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    runtime: RuntimeSettings = RuntimeSettings()
    tools: ToolsSettings = ToolsSettings()
    memory: MemorySettings = MemorySettings()
    limits: LimitsSettings = LimitsSettings()
    uploads: UploadsSettings = UploadsSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The loader merges flags, env and file itself so it can tell where each value came from.
        return (init_settings,)

    @field_validator("services", mode="before")
    @classmethod
    def _split_services(cls, value: Any) -> Any:
        if isinstance(value, str):
            names = [part.strip() for part in value.split(",") if part.strip()]
            return None if not names or names == ["all"] else names
        return value

    @model_validator(mode="after")
    def _extraction_model_declared(self) -> Settings:
        name = self.memory.extraction_model
        if name is not None:
            self.memory.extraction_model = name.lower()
            if self.memory.extraction_model not in self.llm.models:
                raise ValueError(f"memory.extraction_model {name!r} is not in llm.models")
        return self

    @property
    def database_url(self) -> str:
        if self.database.url is not None:
            return self.database.url.get_secret_value()
        return f"sqlite+aiosqlite:///{self.data_dir / 'soma.db'}"

    @property
    def bootstrap_key_file(self) -> Path:
        return self.auth.bootstrap_key_file or self.data_dir / "admin.key"
