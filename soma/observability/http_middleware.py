"""ASGI middleware: request id, a server span, RED metrics and one access log line per request."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from soma.core.ids import new_id
from soma.observability.logging import request_id_var, service_var
from soma.observability.metrics import Metrics

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_log = logging.getLogger("soma.http")


class RequestContextMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware) so streaming responses and throughput are unaffected."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, tracer: Tracer, access_log: bool, spans: bool = True
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.tracer = tracer
        self.access_log = access_log
        self.spans = spans
        """False when no span goes anywhere (no exporter): then none is even started."""
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or new_id()
        method: str = scope["method"]
        start = time.perf_counter()
        status = 500
        elapsed: float | None = None
        service_token = service_var.set("http")
        request_token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            nonlocal status, elapsed
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed = time.perf_counter() - start
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        if not self.spans:
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                duration = elapsed if elapsed is not None else time.perf_counter() - start
                self._count(method, _route_template(scope), status, duration)
                self._log(method, scope, status, duration)
                request_id_var.reset(request_token)
                service_var.reset(service_token)
            return
        with self.tracer.start_as_current_span(
            f"{method} {scope['path']}", kind=SpanKind.SERVER
        ) as span:
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                span.set_status(Status(StatusCode.ERROR))
                raise
            finally:
                route = _route_template(scope)
                if span.is_recording():
                    if status >= 500:
                        # The gateway's error boundary answered in the app's stead.
                        span.set_status(Status(StatusCode.ERROR))
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.request.method", method)
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)
                    span.set_attribute("soma.request_id", request_id)
                duration = elapsed if elapsed is not None else time.perf_counter() - start
                self._count(method, route, status, duration)
                self._log(method, scope, status, duration)
                request_id_var.reset(request_token)
                service_var.reset(service_token)

    def _log(self, method: str, scope: Scope, status: int, duration: float) -> None:
        if self.access_log:
            _log.info(
                "%s %s %d",
                method,
                scope["path"],
                status,
                extra={"status": status, "duration_ms": round(duration * 1000, 3)},
            )

    def _count(self, method: str, route: str, status: int, duration: float) -> None:
        # Resolving label children is a locked dict lookup each; a route's are resolved once.
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.metrics.http_requests.labels(method, route, str(status)),
                self.metrics.http_duration.labels(method, route),
            )
        children[0].inc()
        children[1].observe(duration)


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            return candidate if _REQUEST_ID.match(candidate) else None
    return None


def _route_template(scope: Scope) -> str:
    # Label by route template, never by raw path, to keep metric cardinality bounded.
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
