"""The one ASGI app: health, metrics, and the routers services register."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry.trace import Tracer
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from soma.gateway.problems import PROBLEM_JSON, problem, status_title
from soma.observability.http_middleware import RequestContextMiddleware
from soma.observability.metrics import Metrics

__all__ = ["PROBLEM_JSON", "HealthView", "RouteProvider", "create_app", "problem"]


class HealthView(Protocol):
    """What the app needs from the orchestrator to answer the health routes."""

    def live(self) -> bool: ...

    def ready(self) -> bool: ...

    async def report(self) -> dict[str, Any]: ...


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
) -> FastAPI:
    app = FastAPI(title="SomaAgent01", version="0.1.0", docs_url="/docs", redoc_url=None)

    @app.get("/v1/health", tags=["health"])
    async def health_report() -> JSONResponse:
        body = await health.report()
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

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)

    @app.exception_handler(StarletteHTTPException)
    async def http_problem(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = problem(exc.status_code, status_title(exc.status_code), str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_problem(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": ".".join(str(p) for p in err["loc"]), "msg": err["msg"]} for err in exc.errors()
        ]
        detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
        return problem(422, status_title(422), detail, errors=errors)

    app.add_middleware(
        RequestContextMiddleware, metrics=metrics, tracer=tracer, access_log=access_log
    )
    return app
