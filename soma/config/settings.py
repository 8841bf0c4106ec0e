"""The one configuration model of the platform (ARCHITECTURE §4)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1_024)
    """Largest request body on any route; larger ones get 413 before they are read."""
    max_header_bytes: int = Field(default=32_768, ge=1_024)
    """Request line plus headers; more gets 431 before they are buffered."""
    max_headers: int = Field(default=100, ge=8, le=10_000)
    header_timeout_s: float = Field(default=10.0, gt=0)
    """A connection must deliver a request's complete headers this soon (slow-loris bound)."""
    body_timeout_s: float = Field(default=30.0, gt=0)
    """And the complete body this soon after its headers."""
    keep_alive_s: int = Field(default=5, ge=1, le=3_600)
    max_connections: int = Field(default=4_096, ge=16)
    """Open connections served in full; beyond, idle ones are closed to make room."""
    health_headroom: int = Field(default=64, ge=1, le=10_000)
    """Connections over `max_connections` that may still reach `/v1/health*` (probes)."""
    docs: bool = True
    """Serve `/docs` and `/openapi.json`."""
    reuse_port: bool = False
    """Bind with SO_REUSEPORT, so several API replicas on one host share `port` (the kernel
    spreads connections over them; see docs/architecture.md, "Process shapes")."""


class DatabaseSettings(_Section):
    url: SecretStr | None = None
    """`None` means the SQLite file in `data_dir`; a URL may carry a password, hence secret."""
    pool_size: int = Field(default=10, ge=1, le=500)
    echo: bool = False


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "soma."
    partitions: int = Field(default=6, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)
    session_timeout_ms: int = Field(default=10_000, ge=500)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    rebalance_timeout_ms: int = Field(default=10_000, ge=500)
    request_timeout_ms: int = Field(default=10_000, ge=500)
    """Bound on one produce/metadata round trip, so a dead broker surfaces as an error."""
    idempotent_producer: bool = True
    """Off only for brokers without InitProducerId v0 (the tansu test broker)."""
    fetch_max_wait_ms: int = Field(default=500, ge=1, le=60_000)
    """Longest a fetch waits for data. Kafka answers as soon as data arrives; brokers that
    do not (tansu) add up to this much latency per hop, so lower it for them."""


class BusSettings(_Section):
    backend: Literal["local", "kafka"] = "local"
    max_attempts: int = Field(default=5, ge=1, le=100)
    """Deliveries of one message before it goes to `<topic>.dlq`."""
    concurrency: int = Field(default=64, ge=1, le=10_000)
    """Keys processed at once per consumer group."""
    prefetch: int = Field(default=1_000, ge=1, le=1_000_000)
    """Messages fetched but not yet acked per consumer group before fetching pauses."""
    retry_backoff_s: float = Field(default=0.2, gt=0)
    retry_backoff_max_s: float = Field(default=10.0, gt=0)
    local_capacity: int = Field(default=10_000, ge=1, le=10_000_000)
    """Messages a local topic holds before publishers wait for its slowest consumer group."""
    kafka: KafkaSettings = KafkaSettings()


class OutboxSettings(_Section):
    batch_size: int = Field(default=500, ge=1, le=10_000)
    poll_interval_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=10.0, gt=0)
    retention_s: float = Field(default=3600.0, ge=0)


class CacheSettings(_Section):
    url: SecretStr = SecretStr("memory://")
    max_connections: int = Field(default=64, ge=1, le=10_000)
    stream_maxlen: int = Field(default=10_000, ge=10)
    stream_ttl_s: int = Field(default=3600, ge=1)
    stream_grace_s: float = Field(default=30.0, gt=0)
    """How long a finished run's stream stays after its terminal event (milestones are durable)."""
    stream_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """In-process streams only: all streams together; the oldest finished ones go first."""


class PolicySettings(_Section):
    engine: Literal["embedded", "opa"] = "embedded"
    opa_url: str = "http://127.0.0.1:8181"
    timeout_s: float = Field(default=2.0, gt=0)
    rego_dir: Path | None = None
    """Directory of `.rego` files; `None` means the policies shipped in `soma/policy/rego`."""


class ModelSettings(_Section):
    provider: Literal["openai", "local"]
    base_url: str | None = None
    model: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    fallbacks: list[str] = []
    path: Path | None = None
    """GGUF file for the local provider; `None` means the bundled SmolLM2."""
    context_tokens: int = Field(default=8192, ge=256)
    max_concurrency: int = Field(default=1, ge=1, le=64)

    @model_validator(mode="after")
    def _openai_needs_url(self) -> ModelSettings:
        if self.provider == "openai" and not self.base_url:
            raise ValueError("an openai provider needs base_url")
        return self


def _default_models() -> dict[str, ModelSettings]:
    return {"local": ModelSettings(provider="local", context_tokens=2048)}


class LLMSettings(_Section):
    default_model: str = "local"
    models: dict[str, ModelSettings] = Field(default_factory=_default_models)
    retries: int = Field(default=2, ge=0, le=10)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=30.0, gt=0)
    retry_window_s: float = Field(default=120.0, ge=0)
    """How long a request waits out transient upstream failures (before its first token)."""
    retry_backoff_max_s: float = Field(default=5.0, gt=0)
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


class AuthSettings(_Section):
    bootstrap_key_file: Path | None = None
    """`None` means `<data_dir>/admin.key`."""
    key_cache_ttl_s: float = Field(default=5.0, ge=0)
    negative_cache_ttl_s: float = Field(default=10.0, ge=0)
    """How long an unknown key prefix is remembered as unknown (shared cache; 0 disables)."""
    local_cache_ttl_s: float = Field(default=0.5, ge=0, le=5)
    """In-process cache in front of the shared one; a revocation reaches other replicas after
    at most this long (the revoking replica drops its own entry at once). 0 disables."""
    local_cache_size: int = Field(default=10_000, ge=1, le=1_000_000)
    failed_auth_rate_per_s: float = Field(default=10.0, gt=0)
    """Failed authentications per client address and second, on average, before 429."""
    failed_auth_burst: int = Field(default=100, ge=1, le=1_000_000)


class ObservabilitySettings(_Section):
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    otlp_endpoint: str | None = None
    access_log: bool = True


class RuntimeSettings(_Section):
    max_concurrent_runs: int = Field(default=64, ge=1, le=10_000)
    lease_s: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=100)
    recovery_interval_s: float = Field(default=5.0, gt=0)
    requeue_after_s: float = Field(default=60.0, gt=0)
    """A queued run not started this long after its request was published is requested again."""
    drain_timeout_s: float = Field(default=10.0, ge=0)
    """On shutdown, how long in-flight runs may finish before they are handed back."""
    sse_heartbeat_s: float = Field(default=15.0, gt=0)
    agent_cache_ttl_s: float = Field(default=1.0, ge=0, le=60)
    """How long a gateway reuses an agent it looked up to accept a message (0: never cache):
    an agent edit reaches other replicas' accepts within this long."""


class SandboxSettings(_Section):
    """How `python` and `shell` run (soma/tools/sandbox)."""

    isolation: Literal["bubblewrap", "rlimits"] = "bubblewrap"
    """Required isolation; if the machine cannot give it the tools service is unhealthy.
    `rlimits` (no namespaces) runs only when configured explicitly."""
    bwrap: Path = Path("/usr/bin/bwrap")
    """The bubblewrap binary (Debian package `bubblewrap`)."""
    python: Path | None = None
    """Interpreter of the `python` tool (run with `-I -S`); unset: the one the platform runs on."""
    cpu_s: int = Field(default=30, ge=1, le=3600)
    """RLIMIT_CPU of each sandboxed process."""
    memory_bytes: int = Field(default=1 << 30, ge=64 << 20)
    """RLIMIT_AS of each sandboxed process."""
    max_file_bytes: int = Field(default=64 << 20, ge=1 << 20)
    """RLIMIT_FSIZE: the largest file a call may write."""
    max_processes: int = Field(default=32, ge=4, le=4096)
    """RLIMIT_NPROC: processes and threads one call may have at once."""
    max_open_files: int = Field(default=256, ge=32, le=65536)
    max_output_bytes: int = Field(default=1 << 20, ge=4096)
    """stdout plus stderr of one call; past this the call is killed."""
    tmp_bytes: int = Field(default=64 << 20, ge=1 << 20)
    """Size of the private /tmp (memory-backed) under bubblewrap."""
    uid_base: int = Field(default=2_100_000_000, ge=1000, le=2_140_000_000)
    """When the platform runs as root, calls run as uids from here on, one per busy workspace
    (never root: the kernel does not apply RLIMIT_NPROC to uid 0)."""
    uid_count: int = Field(default=1024, ge=1, le=65_536)
    """How many such uids, shared by every platform process of the machine (at least
    tools.max_concurrent_calls)."""
    uid_lock_dir: Path = Path("/run/lock/soma-sandbox")
    """Where platform processes of one machine lock the uids they use (root only)."""


_ALLOW_HOST = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


class HttpFetchSettings(_Section):
    """The `http_fetch` built-in."""

    allow_hosts: list[str] = []
    """Hosts or CIDR ranges that may be fetched although private, loopback or link-local."""
    max_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    """Response body read per fetch; the rest is not downloaded (the model is told)."""
    timeout_s: float = Field(default=20.0, gt=0)
    """The whole fetch: lookups, connects, redirects and body (a call's own budget may cut it)."""
    max_redirects: int = Field(default=5, ge=0, le=20)
    user_agent: str = "SomaAgent01-http_fetch/0.1"

    @field_validator("allow_hosts")
    @classmethod
    def _hosts_or_networks(cls, value: list[str]) -> list[str]:
        entries = []
        for entry in value:
            entry = entry.strip().lower().rstrip(".")
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if not _ALLOW_HOST.fullmatch(entry):
                    raise ValueError(
                        f"allow_hosts: {entry!r} is not a host name, `*.domain`, address or CIDR"
                    ) from None
            entries.append(entry)
        return entries


class McpServerSettings(_Section):
    """One MCP server whose tools join the catalog as `<name>.<tool>`."""

    command: list[str] | None = None
    """stdio: the command line of the server process (owned and restarted by the service)."""
    url: str | None = None
    """Streamable HTTP: the endpoint URL."""
    headers: dict[str, SecretStr] = {}
    env: dict[str, SecretStr] = {}
    """stdio: variables added to the few the SDK passes on (PATH, HOME, ...); nothing else
    of the platform's environment reaches the server."""
    cwd: Path | None = None
    """stdio: working directory of the server process."""
    connect_timeout_s: float = Field(default=30.0, gt=0)
    """Connecting and listing the tools, at start and on every reconnect."""
    restart_backoff_s: float = Field(default=0.5, gt=0)
    """First wait before a lost server is reconnected (a stdio one restarted); doubles."""
    restart_backoff_max_s: float = Field(default=30.0, gt=0)
    restart_wait_s: float = Field(default=10.0, ge=0)
    """How long a call waits for a server being restarted before it gets an error result."""
    probe_interval_s: float = Field(default=30.0, gt=0)
    """How often the tool list is fetched again (it may change; a dead HTTP server shows)."""

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerSettings:
        if (self.command is None) == (self.url is None):
            raise ValueError("an MCP server needs exactly one of command (stdio) and url (http)")
        if self.command is not None and (not self.command or not self.command[0]):
            raise ValueError("an MCP server's command needs at least the program to run")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("an MCP server's url must be http:// or https://")
        return self


class ToolsSettings(_Section):
    call_timeout_s: float = Field(default=60.0, gt=0)
    max_output_chars: int = Field(default=16_000, ge=256)
    """The longest tool output a model reads (the rest is cut, and it is told so)."""
    approval_timeout_s: float = Field(default=3600.0, gt=0)
    """An approval not decided this long expires as a deny."""
    workspace_quota_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    max_concurrent_calls: int = Field(default=32, ge=1, le=10_000)
    sandbox: SandboxSettings = SandboxSettings()
    http_fetch: HttpFetchSettings = HttpFetchSettings()
    mcp_servers: dict[str, McpServerSettings] = {}


class Settings(BaseSettings):
    """Effective configuration; build it with `soma.config.load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="SOMA_",
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    data_dir: Path = Path(".soma")
    services: Annotated[list[str] | None, NoDecode] = None
    """Services this replica runs (plus their dependencies); `None` means all."""
    shutdown_timeout: float = Field(default=20.0, gt=0)
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

    @property
    def database_url(self) -> str:
        if self.database.url is not None:
            return self.database.url.get_secret_value()
        return f"sqlite+aiosqlite:///{self.data_dir / 'soma.db'}"

    @property
    def bootstrap_key_file(self) -> Path:
        return self.auth.bootstrap_key_file or self.data_dir / "admin.key"
