"""SomaOrchestrator: builds the plan, serves the one app, handles signals, starts and stops."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Generator, Sequence
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import APIRouter
from opentelemetry.trace import Tracer

from orchestrator.app import RouteProvider, create_app
from orchestrator.http_protocol import EdgeLimits, connection_budget, edge_protocol, raise_fd_limit
from orchestrator.lifecycle import CriticalStartFailure, Lifecycle
from orchestrator.registry import ServiceContext, ServiceRegistry, ServiceState
from soma.config import Settings
from soma.core import Figures
from soma.core.redact import redact_text
from soma.gateway.routers.uploads import UPLOADS_PATH, upload_body_limit
from soma.observability.metrics import Metrics
from soma.version import VERSION

_log = logging.getLogger("soma.orchestrator")

EXIT_OK = 0
EXIT_STARTUP_FAILED = 1
EXIT_UNCLEAN_STOP = 1


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the orchestrator owns signals."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def build_plan(
    registry: ServiceRegistry, settings: Settings, metrics: Metrics
) -> list[ServiceState]:
    """Construct the selected services in start order; construction opens and writes nothing."""
    context = ServiceContext(settings, metrics)
    states: list[ServiceState] = []
    for definition in registry.start_order(settings.services):
        service = definition.factory(context)
        if service.name != definition.name:
            raise ValueError(
                f"factory of {definition.name!r} built a service named {service.name!r}"
            )
        context.add(service)
        states.append(ServiceState(definition=definition, service=service))
    return states


class SomaOrchestrator:
    """Owns the ServiceRegistry's services for the life of the process."""

    def __init__(
        self,
        settings: Settings,
        registry: ServiceRegistry,
        metrics: Metrics,
        tracer: Tracer,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.tracer = tracer
        self._lifecycle: Lifecycle | None = None
        self._started = False
        self._draining = False
        self._stop = asyncio.Event()
        self._signals = 0
        self.address: tuple[str, int] | None = None
        """The bound listen address once serving (useful with port 0)."""

    # HealthView
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Exactly while the gateway accepts new work (`Lifecycle.accepting`): every service
        started, no drain begun. Dependency health is `/v1/health`'s business."""
        return self._lifecycle is not None and self._lifecycle.accepting()

    async def report(self, credentials: str | None = None, client: str = "") -> dict[str, Any]:
        lifecycle = self._lifecycle
        services: dict[str, dict[str, Any]] = {}
        if lifecycle is not None:
            if self._started:
                await lifecycle.probe()
            detailed = credentials is not None and await lifecycle.admits_health_details(
                credentials, client
            )
            for state in lifecycle.states:
                services[state.name] = {
                    "status": str(state.status),
                    "critical": state.definition.critical,
                    # Details name hosts and causes: platform admins only, never a secret.
                    "detail": redact_text(state.detail) if detailed else "",
                }
        healthy = self._started and lifecycle is not None and lifecycle.critical_healthy()
        if self._draining:
            status = "draining"
        elif not self._started:
            status = "starting"
        elif healthy:
            status = "healthy"
        else:
            status = "unhealthy"
        return {"status": status, "version": VERSION, "services": services}

    async def services(self, credentials: str | None, client: str) -> dict[str, Any] | None:
        """Each service's status, role, backend and key figures; None unless `credentials` is
        an admin key of the platform tenant."""
        lifecycle = self._lifecycle
        if lifecycle is None or credentials is None:
            return None
        if not await lifecycle.admits_health_details(credentials, client):
            return None
        await lifecycle.probe()
        asked = set(self.settings.services or [])
        lag = _lag_by_group(self.metrics)
        items = []
        for state in lifecycle.states:
            service = state.service
            figures: dict[str, float] = (
                await service.figures() if isinstance(service, Figures) else {}
            )
            if state.name == "bus":
                figures = {**figures, **lag}
            items.append(
                {
                    "name": state.name,
                    "status": str(state.status),
                    "critical": state.definition.critical,
                    "role": "selected" if not asked or state.name in asked else "dependency",
                    "backend": redact_text(state.definition.describe(self.settings)),
                    "detail": redact_text(state.detail),
                    "figures": figures,
                }
            )
        return {"services": items, "replica": {"services": sorted(asked) or ["all"]}}

    def request_stop(self, signum: int | None = None) -> None:
        """First call starts the graceful stop; a second signal forces the exit."""
        self._signals += 1
        if self._signals > 1 and signum is not None:
            _log.error("second signal %s: forcing exit", signal.Signals(signum).name)
            logging.shutdown()
            os._exit(128 + signum)
        if signum is not None:
            _log.info("received %s: draining", signal.Signals(signum).name)
        self._draining = True
        self._stop.set()

    async def run(self) -> int:
        """Serve until a stop is requested; return the process exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signum)
        began = time.perf_counter()
        states = build_plan(self.registry, self.settings, self.metrics)
        lifecycle = Lifecycle(states, self.metrics, self.settings.shutdown_timeout)
        self._lifecycle = lifecycle
        for state in states:
            self.metrics.service_up.labels(state.name).set(0)
        try:
            http = self.settings.http
            sock = _listen(http.host, http.port, reuse_port=http.reuse_port)
        except OSError as exc:
            _log.error(
                "startup failed: http: cannot listen on %s:%d: %s",
                self.settings.http.host,
                self.settings.http.port,
                exc.strerror or exc,
            )
            return EXIT_STARTUP_FAILED
        server = self._server(states)
        # Replicas sharing a port (SO_REUSEPORT) listen only once ready: the kernel would hand
        # a listening-but-starting replica its share of connections, to answer 503.
        serve_now = not http.reuse_port
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="http") if serve_now else (
            None
        )  # fmt: skip
        host, port = sock.getsockname()[:2]
        self.address = (host, port)
        if serve_now:
            _log.info("listening on http://%s:%d", host, port)

        starting = asyncio.create_task(lifecycle.start_all(), name="startup")
        stop_wait = asyncio.create_task(self._stop.wait())
        await asyncio.wait({starting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            await self._stop_server(server, serving)
            return EXIT_OK
        stop_wait.cancel()
        failure = starting.exception()
        if failure is not None:
            _log.error("startup failed: %s", failure)
            await self._stop_server(server, serving)
            if isinstance(failure, CriticalStartFailure):
                return EXIT_STARTUP_FAILED
            raise failure
        self._started = True
        _settle_heap()
        if serving is None:
            serving = asyncio.create_task(server.serve(sockets=[sock]), name="http")
            _log.info("listening on http://%s:%d (port shared with other replicas)", host, port)
        _log.info(
            "ready",
            extra={
                "startup_ms": round((time.perf_counter() - began) * 1000, 1),
                "services": [s.name for s in states],
            },
        )
        await self._stop.wait()
        return await self._shutdown(lifecycle, server, serving)

    async def _shutdown(
        self, lifecycle: Lifecycle, server: _Server, serving: asyncio.Task[None]
    ) -> int:
        deadline = time.monotonic() + self.settings.shutdown_timeout
        began = time.perf_counter()
        await lifecycle.drain_all(deadline)
        await self._stop_server(server, serving)
        clean = await lifecycle.stop_all(deadline)
        elapsed_ms = round((time.perf_counter() - began) * 1000, 1)
        if not clean:
            _log.error("stopped with errors", extra={"shutdown_ms": elapsed_ms})
            return EXIT_UNCLEAN_STOP
        _log.info("stopped", extra={"shutdown_ms": elapsed_ms})
        return EXIT_OK

    def _server(self, states: Sequence[ServiceState]) -> _Server:
        routers: list[APIRouter] = []
        for state in states:
            if isinstance(state.service, RouteProvider):
                routers.extend(state.service.routers())
        http = self.settings.http
        observability = self.settings.observability
        app = create_app(
            self,
            self.metrics,
            self.tracer,
            routers,
            observability.access_log,
            http,
            # With no exporter a span goes nowhere: the request's own id correlates the logs.
            spans=observability.otlp_endpoint is not None,
            body_limits={UPLOADS_PATH: upload_body_limit(self.settings.uploads)},
        )
        limits = EdgeLimits.of(http, connection_budget(http, raise_fd_limit()))
        config = uvicorn.Config(
            app,
            loop="none",
            http=edge_protocol(limits),
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            # Client addresses come from the socket; no proxy is trusted to rewrite them.
            proxy_headers=False,
            timeout_keep_alive=http.keep_alive_s,
            timeout_graceful_shutdown=max(int(self.settings.shutdown_timeout / 2), 1),
        )
        return _Server(config)

    async def _stop_server(self, server: _Server, serving: asyncio.Task[None] | None) -> None:
        if serving is None:
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(serving, timeout=self.settings.shutdown_timeout)
        except TimeoutError:
            server.force_exit = True
            serving.cancel()
            _log.error("http server did not stop within the shutdown timeout")


GC_THRESHOLDS = (50_000, 20, 20)
"""The collector's generation thresholds while serving (CPython's are 700, 10, 10)."""


def _settle_heap() -> None:
    """Tune the cycle collector for a server once everything is loaded.

    A request allocates hundreds of short-lived objects: at CPython's default threshold the
    collector ran every few requests and walked the whole heap of loaded modules and caches
    every few hundred, a quarter of the CPU of an accepted message (measured with it off).
    What start-up loaded is frozen out of every collection; young collections run 70x less
    often. Reference counting still frees almost everything at once; cycles still go.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _lag_by_group(metrics: Metrics) -> dict[str, float]:
    """Consumer lag of this replica's groups (summed over topics and partitions)."""
    lag: dict[str, float] = {}
    for family in metrics.registry.collect():
        if family.name != "soma_bus_consumer_lag":
            continue
        for sample in family.samples:
            key = f"lag:{sample.labels.get('group', '?')}"
            lag[key] = lag.get(key, 0.0) + sample.value
    return lag
