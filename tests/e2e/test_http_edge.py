"""Hostile clients against the real process: oversized and malformed requests, hostile JSON,
idle and slow connections (issue 10, findings 1, 2 and 4)."""

from __future__ import annotations

import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest

from tests.e2e.platform import Platform, launch
from tests.e2e.stacks import FAST_RECOVERY, Stack, Upstream, model_env

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"
HUNDRED_MB = 100 * 1024 * 1024
MARKER = "hostile-marker-5b1f"
"""Put inside hostile input; it must never show up in the platform's log."""


# --- raw HTTP helpers ------------------------------------------------------------------------


def _port(platform: Platform) -> int:
    return int(platform.base_url.rsplit(":", 1)[1])


def _answered(sock: socket.socket) -> bool:
    poller = select.poll()  # not select(): descriptors past 1024 are common in these tests
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _read_all(sock: socket.socket, timeout: float = 20.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def flood(port: int, head: bytes, chunk: bytes, total: int) -> bytes:
    """Send `head`, then `chunk` until `total` bytes or an answer; return the answer."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head)
        sent = 0
        try:
            while sent < total and not _answered(sock):
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server closed its side: its answer is already in our buffer
        return _read_all(sock)


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), raw[:200]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def assert_problem(raw: bytes, status: int) -> None:
    code, headers, body = parse(raw)
    assert code == status, raw[:300]
    assert headers["content-type"] == PROBLEM
    assert headers["x-content-type-options"] == "nosniff"
    assert orjson.loads(body)["status"] == status


class RssPeak:
    """Samples a process's RSS in the background; `peak` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.baseline = self._process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


# --- oversized and hostile requests (both stacks) --------------------------------------------


def _counts(client: httpx.Client) -> tuple[int, int]:
    sessions = client.get("/v1/sessions", params={"limit": 200}).json()["items"]
    agents = client.get("/v1/agents", params={"limit": 200}).json()["items"]
    return len(sessions), len(agents)


def test_oversized_requests_are_refused_early_and_memory_stays_flat(stack: Stack) -> None:
    platform = stack.launch()
    key = stack.admin_key
    port = _port(platform)
    auth = f"Authorization: Bearer {key}\r\n".encode()
    with httpx.Client(base_url=platform.base_url, headers={"Authorization": f"Bearer {key}"}) as c:
        for _ in range(20):  # warm up the code paths the attempts use
            c.post("/v1/sessions", json={"metadata": {"a": 1}})
        before = _counts(c)
        declared = (
            b"POST /v1/sessions HTTP/1.1\r\nHost: t\r\n" + auth + b"Content-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n" % HUNDRED_MB + b'{"metadata": {"a": "'
        )
        chunked = (
            b"POST /v1/sessions HTTP/1.1\r\nHost: t\r\n" + auth + b"Content-Type: application/json"
            b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        attempts: list[tuple[str, Callable[[], bytes], int]] = [
            ("declared 100 MB", lambda: flood(port, declared, b"a" * 65536, HUNDRED_MB), 413),
            (
                "chunked 100 MB",
                lambda: flood(port, chunked, b"10000\r\n" + b"a" * 65536 + b"\r\n", HUNDRED_MB),
                413,
            ),
            (
                "100 MB header",
                lambda: flood(
                    port, b"GET /v1/agents HTTP/1.1\r\nX-Big: ", b"b" * 65536, HUNDRED_MB
                ),
                431,
            ),
            (
                "a million headers",
                lambda: flood(
                    port,
                    b"GET /v1/agents HTTP/1.1\r\n" + auth,
                    b"".join(b"X-H%d: v\r\n" % i for i in range(4096)),
                    1_000_000 * 10,
                ),
                431,
            ),
        ]
        with RssPeak(platform.process.pid) as rss, ThreadPoolExecutor(8) as pool:
            for _, attempt, status in attempts:
                assert_problem(attempt(), status)
            # Four of each at once, as a hostile client would.
            futures = [(pool.submit(a), s) for _, a, s in attempts for _ in range(4)]
            for future, status in futures:
                assert_problem(future.result(), status)
        after = _counts(c)
        health = c.get("/v1/health")
    assert after == before  # nothing was written
    assert health.status_code == 200
    growth_mb = (rss.peak - rss.baseline) / 2**20
    assert growth_mb < 50, f"RSS grew {growth_mb:.1f} MB under oversized requests"


def _deep(depth: int, leaf: Any = 1) -> Any:
    value: Any = leaf
    for _ in range(depth):
        value = [value]
    return value


def _deep_object(depth: int) -> str:
    return '{"k":' * depth + f'"{MARKER}"' + "}" * depth


def test_hostile_json_is_a_4xx_problem_and_leaves_no_trace(stack: Stack) -> None:
    platform = stack.launch()
    with httpx.Client(
        base_url=platform.base_url, headers={"Authorization": f"Bearer {stack.admin_key}"}
    ) as client:
        session = client.post("/v1/sessions", json={}).json()["id"]
        agent = client.post("/v1/agents", json={"name": "target"}).json()["id"]
        before = _counts(client)
        big = 2**64 * 10
        messages_path = f"/v1/sessions/{session}/messages"
        bodies: list[tuple[str, str, str]] = [
            ("POST", "/v1/sessions", f'{{"metadata": {{"{MARKER}": {big}}}}}'),
            ("POST", "/v1/sessions", f'{{"metadata": {{"a": [[1, {{"b": -{big}}}]]}}}}'),
            ("POST", "/v1/sessions", f'{{"title": {big}}}'),
            ("PATCH", f"/v1/agents/{agent}", f'{{"metadata": {{"n": {big}}}}}'),
            ("POST", messages_path, f'{{"content": "x", "metadata": {{"{MARKER}": {big}}}}}'),
        ]
        for depth in (254, 300, 600, 961, 5_000):
            nested = _deep_object(depth)
            bodies += [
                ("POST", "/v1/sessions", f'{{"metadata": {nested}}}'),
                ("POST", "/v1/sessions", f'{{"title": {nested}}}'),
                ("POST", "/v1/agents", f'{{"name": "n", "tools": {nested}}}'),
                ("PATCH", f"/v1/agents/{agent}", f'{{"metadata": {{"m": {nested}}}}}'),
                ("POST", messages_path, f'{{"content": "x", "metadata": {{"m": {nested}}}}}'),
                ("POST", messages_path, f'{{"content": {nested}}}'),
            ]
        many_keys = {f"k{i}": MARKER for i in range(1_000)}
        bodies.append(("POST", "/v1/sessions", orjson.dumps({"metadata": many_keys}).decode()))
        json_type = {"content-type": "application/json"}
        answers = [
            (method, path, client.request(method, path, content=body, headers=json_type))
            for method, path, body in bodies
        ]
        after = _counts(client)
        messages = client.get(f"/v1/sessions/{session}/messages").json()["items"]
        agent_after = client.get(f"/v1/agents/{agent}").json()
    wrong = [
        (method, path, response.status_code, response.text[:200])
        for method, path, response in answers
        if response.status_code not in (400, 422) or response.headers["content-type"] != PROBLEM
    ]
    assert wrong == []
    assert after == before and messages == [] and agent_after["metadata"] == {}
    logs = platform.logs()
    assert MARKER not in logs and "Traceback" not in logs
    assert '"level":"ERROR"' not in logs


def test_malformed_requests_get_problem_answers_from_the_server_itself(stack: Stack) -> None:
    platform = stack.launch()
    port = _port(platform)
    for raw in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(raw)
            answer = _read_all(sock)
        assert_problem(answer, 400)
        assert "server" not in parse(answer)[1]


# --- connections (embedded: the HTTP server is the same on both stacks) -----------------------


HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 3
CLOSE_DEADLINE_S = 60
"""Liveness bound on how long a timed-out connection may stay open (not a timing assert)."""


@pytest.fixture
def edge_platform(
    tmp_path: Path, upstreams: dict[str, Upstream], request: pytest.FixtureRequest
) -> Iterator[Platform]:
    extra: dict[str, str] = getattr(request, "param", {})
    env = {
        **model_env(upstreams),
        **FAST_RECOVERY,
        "SOMA_HTTP__HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "SOMA_HTTP__BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        **extra,
    }
    platform = launch(tmp_path, env)
    try:
        platform.wait_healthy()
        yield platform
    finally:
        if platform.process.poll() is None:
            platform.process.kill()
            platform.process.wait()


def _open(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(True)
        sock.connect(("127.0.0.1", port))
        sockets.append(sock)
    return sockets


def _closed_answers(sockets: list[socket.socket]) -> list[bytes]:
    """Wait until the server closed every socket; return what each received."""
    deadline = time.monotonic() + CLOSE_DEADLINE_S
    received = {sock.fileno(): b"" for sock in sockets}
    by_fd = {sock.fileno(): sock for sock in sockets}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    open_ = set(by_fd)
    while open_ and time.monotonic() < deadline:
        for fd, _ in poller.poll(1000):
            try:
                chunk = by_fd[fd].recv(65536)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                received[fd] += chunk
            else:
                open_.discard(fd)
                poller.unregister(fd)
    assert not open_, f"{len(open_)} connections still open after {CLOSE_DEADLINE_S}s"
    return [received[sock.fileno()] for sock in sockets]


def _chat(platform: Platform, key: str) -> tuple[int, int]:
    with httpx.Client(
        base_url=platform.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        health = client.get("/v1/health").status_code
        session = client.post("/v1/sessions", json={}).json()["id"]
        sent = client.post(f"/v1/sessions/{session}/messages", json={"content": "still there?"})
    return health, sent.status_code


def _key(platform: Platform) -> str:
    return Path(platform.env["SOMA_DATA_DIR"], "admin.key").read_text().strip()


def test_idle_and_slow_loris_connections_do_not_take_the_server_down(
    edge_platform: Platform,
) -> None:
    port = _port(edge_platform)
    idle = _open(port, 3_000)
    slow = _open(port, 300)
    try:
        for sock in slow:
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: t\r\n")
        # Trickle one header line each while checking the server still serves others.
        for _ in range(2):
            for sock in slow:
                sock.sendall(b"X-Slow: 1\r\n")
            assert _chat(edge_platform, _key(edge_platform)) == (200, 202)
        slow_answers = _closed_answers(slow)
        idle_answers = _closed_answers(idle)
        assert _chat(edge_platform, _key(edge_platform)) == (200, 202)
    finally:
        for sock in idle + slow:
            sock.close()
    for answer in slow_answers:
        assert_problem(answer, 408)
    assert all(answer == b"" for answer in idle_answers)  # never sent a byte: closed quietly


@pytest.mark.parametrize(
    "edge_platform",
    [{"SOMA_HTTP__MAX_CONNECTIONS": "100", "SOMA_HTTP__HEALTH_HEADROOM": "8"}],
    indirect=True,
)
def test_at_the_connection_limit_idle_ones_make_room_and_health_keeps_answering(
    edge_platform: Platform,
) -> None:
    port = _port(edge_platform)
    key = _key(edge_platform)
    idle = _open(port, 1_000)  # ten times the limit: the oldest idle ones are closed for room
    try:
        assert _chat(edge_platform, key) == (200, 202)
    finally:
        for sock in idle:
            sock.close()
    session = httpx.post(
        f"{edge_platform.base_url}/v1/sessions",
        json={},
        headers={"Authorization": f"Bearer {key}"},
    ).json()["id"]
    # Busy connections (a body still arriving) are never closed for room: fill the limit.
    head = (
        f"POST /v1/sessions/{session}/messages HTTP/1.1\r\nHost: t\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n{"
    ).encode()
    busy = _open(port, 100)
    try:
        for sock in busy:
            sock.sendall(head)
        time.sleep(0.5)  # let the server read every head; it is not a timing assertion
        with socket.create_connection(("127.0.0.1", port)) as probe:
            probe.sendall(b"GET /v1/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
            live = probe.recv(65536)
        with socket.create_connection(("127.0.0.1", port)) as other:
            other.sendall(b"GET /v1/agents HTTP/1.1\r\nHost: t\r\n\r\n")
            refused = _read_all(other)
        busy_answers = _closed_answers(busy)
    finally:
        for sock in busy:
            sock.close()
    assert parse(live)[0] == 200
    assert_problem(refused, 503)
    assert parse(refused)[1]["retry-after"] == "1"
    for answer in busy_answers:
        assert_problem(answer, 408)  # the body never came: closed after body_timeout_s
    assert _chat(edge_platform, key) == (200, 202)


def test_a_request_sent_before_the_previous_answer_ended_is_answered(
    edge_platform: Platform,
) -> None:
    # A client may send its next request as soon as the previous body's bytes arrived, before
    # the server finished that response; here the next request's body also comes later.
    key = _key(edge_platform)
    first = b"GET /v1/health/live HTTP/1.1\r\nHost: t\r\n\r\n"
    second = (
        f"POST /v1/sessions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", _port(edge_platform))) as sock:
        sock.sendall(first + second)
        time.sleep(0.3)  # the first answer completes while the second's body is still due
        sock.sendall(b"{}")
        sock.sendall(b"GET /v1/health/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answers = _read_all(sock)
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answers)]
    assert statuses == [200, 201, 200], answers[:600]
