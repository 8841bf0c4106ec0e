"""uvicorn's httptools protocol with the limits it lacks: header size and count, header and body
read timeouts, and a connection limit that keeps room for health probes.

httptools accumulates a header's bytes in Python objects before any callback sees the whole
header, so the limits are counted per received chunk here, before the parser may buffer more
than one chunk past them. The server's own refusals (400, 408, 431, 503) are problem+json.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from asyncio import TimerHandle
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from soma.config.settings import HttpSettings
from soma.gateway.middleware.security import SECURITY_HEADERS
from soma.gateway.problems import PROBLEM_JSON, problem_bytes, status_title

_log = logging.getLogger("soma.http.server")

HEALTH_PREFIX = "/v1/health"
FD_RESERVE = 256
"""Descriptors kept for everything but client connections (database, bus, files, logs)."""
LINGER_S = 5.0
LINGER_BYTES = 16 * 1024 * 1024
"""After a refusal, what the client still sends is read and dropped this long (or this much)
before closing: closing with unread data would reset the connection, and a client still
sending would lose the answer (nginx's lingering close)."""


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    health_headroom: int

    @classmethod
    def of(cls, http: HttpSettings, max_connections: int) -> EdgeLimits:
        return cls(
            max_header_bytes=http.max_header_bytes,
            max_headers=http.max_headers,
            header_timeout_s=http.header_timeout_s,
            body_timeout_s=http.body_timeout_s,
            max_connections=max_connections,
            health_headroom=http.health_headroom,
        )


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; carries the answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status)
        self.status = status
        self.detail = detail


def problem_response(status: int, detail: str) -> bytes:
    """A complete HTTP/1.1 problem+json answer that closes the connection."""
    body = problem_bytes(status, detail)
    lines = [
        f"HTTP/1.1 {status} {status_title(status)}".encode(),
        b"content-type: " + PROBLEM_JSON.encode(),
        b"content-length: %d" % len(body),
        b"connection: close",
        *(name + b": " + value for name, value in SECURITY_HEADERS),
    ]
    if status == 503:
        lines.append(b"retry-after: 1")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class ConnectionBook:
    """The server's connections that wait for a request (idle), oldest first."""

    def __init__(self) -> None:
        self.idle: dict[EdgeProtocol, None] = {}

    def evict_oldest_idle(self) -> bool:
        for protocol in self.idle:
            del self.idle[protocol]
            protocol.transport.close()
            return True
        return False


class EdgeProtocol(HttpToolsProtocol):
    """Bind `limits` and `book` per server with `edge_protocol()`."""

    limits: ClassVar[EdgeLimits]
    book: ClassVar[ConnectionBook]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._in_headers = True
        """Not inside a request body: waiting for, or reading, a request's headers."""
        self._header_started = False
        """A request's first bytes arrived and its header block is not complete yet."""
        self._headers_completed = 0
        self._header_bytes = 0
        self._chunk = 0
        self._message_done = True
        self._header_timer: TimerHandle | None = None
        self._body_timer: TimerHandle | None = None
        self._health_only = False
        self._lingering = False
        self._lingered = 0

    # Connections
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        crowded = len(self.connections) >= self.limits.max_connections
        super().connection_made(transport)
        if crowded and not self.book.evict_oldest_idle():
            if len(self.connections) > self.limits.max_connections + self.limits.health_headroom:
                transport.abort()
                return
            # Every connection is busy: this one may still ask for health, nothing else.
            self._health_only = True
        self.book.idle[self] = None
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.book.idle.pop(self, None)
        self._cancel_timers()
        super().connection_lost(exc)

    # Reading
    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        reading_headers = self._in_headers
        completed = self._headers_completed
        self._chunk = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if isinstance(refusal, _Refused):
                self._refuse(refusal.status, refusal.detail)
            else:
                self._refuse(400, "the request could not be handled")
            return
        except httptools.HttpParserUpgrade:
            # No upgrade is supported (WebSockets are off): the request was served as HTTP.
            return
        except httptools.HttpParserError:
            self._refuse(400, "malformed HTTP request")
            return
        if reading_headers and self._headers_completed == completed:
            # No header block ended in this chunk, so all of it was header bytes: count them
            # before the parser may buffer more (httptools keeps a header's bytes until it ends).
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_header_bytes:
                self._refuse(431, "the request headers are too large")
                return
        # Timers only for requests that span chunks: a request that arrives whole costs none.
        if self._in_headers:
            if self._header_started and self._header_timer is None and self._idle_cycle():
                self._arm_header_timer()
        elif not self._message_done and self._body_timer is None:
            self._body_timer = self.loop.call_later(
                self.limits.body_timeout_s, self._body_timed_out
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_started = True
        self._message_done = False

    def on_headers_complete(self) -> None:
        if len(self.headers) > self.limits.max_headers:
            raise _Refused(431, f"more than {self.limits.max_headers} request headers")
        if self._header_bytes + self._chunk > self.limits.max_header_bytes:
            # Only a block that may be too large is measured exactly.
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if size > self.limits.max_header_bytes:
                raise _Refused(431, "the request headers are too large")
        self._in_headers = False
        self._header_started = False
        self._headers_completed += 1
        self._header_bytes = 0
        self.book.idle.pop(self, None)
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self._health_only and not self.url.startswith(HEALTH_PREFIX.encode()):
            raise _Refused(503, "the server is at its connection limit; retry shortly")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._message_done = True
        self._in_headers = True  # whatever comes next starts another request's headers
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        # The answered request is the newest one unless another was pipelined behind it (a
        # client may send its next request once the body's bytes arrived, before this call).
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and cycle.more_body:
            # Answered before its body arrived (a 413): drop the rest rather than parse it.
            self._linger()
        elif self._idle_cycle():
            self.book.idle[self] = None
            if self._header_started and self._header_timer is None:
                # A pipelined request's headers were waiting on this response: time them now.
                self._arm_header_timer()

    def _idle_cycle(self) -> bool:
        """No response in progress (a pipelined request's clock starts when its turn comes)."""
        return self.cycle is None or self.cycle.response_complete

    # The server's own answers
    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "malformed HTTP request")

    def _refuse(self, status: int, detail: str) -> None:
        self._cancel_timers()
        if not self.transport.is_closing():
            cycle = self.cycle
            if cycle is None or cycle.response_complete or not cycle.response_started:
                self.transport.write(problem_response(status, detail))
            if cycle is not None:
                cycle.disconnected = True
                cycle.message_event.set()
            self._linger()
        _log.info("refused a request: %d %s", status, detail, extra={"status": status})

    def _linger(self) -> None:
        """Stop parsing; FIN after what is written; drop what still comes for a while; close."""
        self._cancel_timers()
        self._unset_keepalive_if_required()
        self.book.idle.pop(self, None)
        self._lingering = True
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._body_timer = self.loop.call_later(LINGER_S, self.transport.close)

    # Timeouts
    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(
            self.limits.header_timeout_s, self._headers_timed_out
        )

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if not self._in_headers or self.transport.is_closing():
            return
        if self._header_started:
            self._refuse(408, "the request headers did not arrive in time")
        else:
            self.transport.close()

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self._message_done and not self.transport.is_closing():
            self._refuse(408, "the request body did not arrive in time")

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None


def edge_protocol(limits: EdgeLimits) -> type[EdgeProtocol]:
    """A protocol class bound to one server's limits and connection book."""
    return type("BoundEdgeProtocol", (EdgeProtocol,), {"limits": limits, "book": ConnectionBook()})


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            _log.warning("could not raise the open-files limit: %s", exc)
    return soft


def connection_budget(http: HttpSettings, fd_limit: int) -> int:
    """`http.max_connections`, lowered so connections plus headroom never exhaust descriptors."""
    room = fd_limit - FD_RESERVE - http.health_headroom
    if room < http.max_connections:
        _log.warning(
            "http.max_connections lowered to fit the open-files limit",
            extra={"configured": http.max_connections, "effective": max(room, 16), "fds": fd_limit},
        )
        return max(room, 16)
    return http.max_connections
