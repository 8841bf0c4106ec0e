"""The one ASGI app: health, metrics, and the routers services register."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from opentelemetry.trace import Tracer
from prometheus_client import CONTENT_TYPE_LATEST

from soma.config.settings import HttpSettings
from soma.gateway.console import console_files, console_paths, console_router
from soma.gateway.docs import DOCS_URL, docs_router
from soma.gateway.errors import install_problem_handlers
from soma.gateway.middleware import EdgeMiddleware
from soma.gateway.middleware.security import headers_for_console, headers_for_docs
from soma.gateway.problems import PROBLEM_JSON, problem, problem_responses
from soma.gateway.service import GATEWAY_PROBLEMS
from soma.observability.http_middleware import RequestContextMiddleware
from soma.observability.metrics import Metrics
from soma.version import VERSION

__all__ = ["PROBLEM_JSON", "HealthView", "RouteProvider", "create_app", "problem"]


class HealthView(Protocol):
    """What the app needs from the orchestrator to answer the health routes."""

    def live(self) -> bool: ...

    def ready(self) -> bool: ...

    async def report(self, credentials: str | None = None, client: str = "") -> dict[str, Any]:
        """Status of every service; `detail` only for credentials that may see it."""
        ...

    async def services(self, credentials: str | None, client: str) -> dict[str, Any] | None:
        """Services with role, backend and figures; None unless a platform admin asks."""
        ...


@runtime_checkable
class RouteProvider(Protocol):
    """A service that contributes HTTP routes to the one app."""

    def routers(self) -> Sequence[APIRouter]: ...


def create_app(
    health: HealthView,
    metrics: Metrics,
    tracer: Tracer,
    routers: Sequence[APIRouter] = (),
    access_log: bool = True,
    http: HttpSettings | None = None,
    spans: bool = True,
    body_limits: Mapping[str, int] | None = None,
) -> FastAPI:
    http = http or HttpSettings()
    app = FastAPI(
        title="SomaAgent01",
        version=VERSION,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if http.docs else None,
        # The middleware below traces and meters every request once; FastAPI's own
        # telemetry would do it all a second time.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )

    @app.get("/v1/health", tags=["health"])
    async def health_report(request: Request) -> JSONResponse:
        # No key: status only. An admin key of the platform tenant also gets each detail
        # (addresses, versions, reasons); no 401 here, health stays open to probes.
        client = request.client.host if request.client is not None else "unknown"
        body = await health.report(_bearer(request), client)
        return JSONResponse(body, status_code=200 if body["status"] == "healthy" else 503)

    @app.get("/v1/health/live", tags=["health"])
    async def live() -> JSONResponse:
        ok = health.live()
        return JSONResponse({"status": "live" if ok else "dead"}, status_code=200 if ok else 503)

    @app.get("/v1/health/ready", tags=["health"])
    async def ready() -> JSONResponse:
        ok = health.ready()
        body = {"status": "ready" if ok else "not ready"}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/v1/admin/services", tags=["admin"], responses=problem_responses(GATEWAY_PROBLEMS))
    async def services(request: Request) -> JSONResponse:
        """Each service's status, role, backend and key figures (platform admins)."""
        credentials = _bearer(request)
        if credentials is None:
            return problem(401, "Unauthorized", "an admin key of the default tenant is required")
        client = request.client.host if request.client is not None else "unknown"
        body = await health.services(credentials, client)
        if body is None:
            return problem(403, "Forbidden", "only an admin key of the default tenant sees this")
        return JSONResponse(body)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    if app.openapi_url is not None:
        app.include_router(docs_router(app.title, app.openapi_url))
    path_headers = {DOCS_URL: headers_for_docs()}
    if http.console:
        files = console_files()
        app.include_router(console_router(files))
        path_headers |= dict.fromkeys(console_paths(files), headers_for_console())
    for router in routers:
        app.include_router(router)

    install_problem_handlers(app)
    # Added last = outermost: the request context sees the edge's 413s and 500s too.
    app.add_middleware(
        EdgeMiddleware,
        max_body_bytes=http.max_body_bytes,
        path_headers=path_headers,
        path_limits=body_limits,
    )
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        tracer=tracer,
        access_log=access_log,
        spans=spans,
    )
    return app


def _bearer(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return (credentials.strip() or None) if scheme.lower() == "bearer" else None
