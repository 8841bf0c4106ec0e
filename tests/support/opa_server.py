"""A small OPA stand-in for tests: OPA's Data API (`POST /v1/data/<path>`, `GET /health`)
served over real HTTP, evaluating the same `.rego` files with the embedded engine.

No OPA binary exists on this machine; this speaks the same wire format so the OPA adapter is
exercised end to end. `delay_s` holds every data answer back, to provoke client timeouts.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from soma.policy.embedded import Policies, read_sources, thread_engine


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test output is not an access log."""

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {})
        else:
            self._send(404, {"code": "not_found", "message": self.path})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        if not self.path.startswith("/v1/data/"):
            self._send(404, {"code": "not_found", "message": self.path})
            return
        if self.server.delay_s:
            time.sleep(self.server.delay_s)
        try:
            document = json.loads(raw or b"{}")
        except ValueError as exc:
            self._send(400, {"code": "invalid_parameter", "message": str(exc)})
            return
        rule = "data." + self.path[len("/v1/data/") :].strip("/").replace("/", ".")
        try:
            engine = self.server.engine()
            engine.set_input_json(json.dumps(document.get("input")))
            answer = json.loads(engine.eval_query_as_json(rule))
        except Exception as exc:
            message = str(exc).split("Stack backtrace:", 1)[0].strip()
            self._send(500, {"code": "internal_error", "message": message})
            return
        results = answer.get("result") or []
        # Like OPA: an undefined document answers 200 without a `result` key.
        self._send(200, {"result": results[0]["expressions"][0]["value"]} if results else {})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    """socketserver's default backlog of 5 resets bursts of new client connections."""

    def __init__(self, policies: Policies, delay_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.policies = policies
        self.delay_s = delay_s
        self.connections: set[socket.socket] = set()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out on purpose (the timeout tests) leaves a broken pipe here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def engine(self) -> Any:
        # One engine per connection thread: regorus engines cannot cross threads.
        return thread_engine(self.policies)


class OpaTestServer:
    """Serves until `stop()`; `url` is its base URL (`http://127.0.0.1:PORT`)."""

    def __init__(self, rego_dir: Path | None = None, delay_s: float = 0.0) -> None:
        self._server = _Server(Policies(read_sources(rego_dir)), delay_s)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> OpaTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        # Keep-alive connections have threads of their own: cut them so the server is gone.
        for connection in list(self._server.connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._thread.join()

    def __enter__(self) -> OpaTestServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
