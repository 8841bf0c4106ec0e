"""`http_fetch` against a real local HTTP server: SSRF refusals, pinning, redirects, caps."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from soma.config.tools import HttpFetchSettings
from soma.tools.builtins.http_fetch import HttpFetchTool
from soma.tools.builtins.netguard import IPAddress, RefusedError
from soma.tools.catalog import check_schema
from soma.tools.port import ToolCallContext, ToolOutcome

pytestmark = pytest.mark.integration

LOOPBACK = ipaddress.ip_address("127.0.0.1")


@dataclass
class Upstream:
    """A real HTTP server on 127.0.0.1 and what it was asked."""

    port: int
    hosts: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream(port=0)

    @web.middleware
    async def record(request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
        state.hosts.append(request.headers.get("Host", ""))
        state.paths.append(request.path)
        return await handler(request)

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text="<html><head><title>Hi</title></head><body><p>Hello <b>there</b></p></body>",
            content_type="text/html",
        )

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="plain text", content_type="text/plain")

    async def secret(request: web.Request) -> web.Response:
        return web.Response(text="the loopback secret", content_type="text/plain")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def loop_forever(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        try:
            for _ in range(64):  # 4 MiB if the client kept reading
                await response.write(b"x" * 65536)
        except (ConnectionError, RuntimeError):
            pass
        return response

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(text="late")

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no such page", content_type="text/plain")

    async def binary(request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG\x00\x01", content_type="image/png")

    app = web.Application(middlewares=[record])
    app.add_routes(
        [
            web.get("/page", page),
            web.get("/plain", plain),
            web.get("/secret", secret),
            web.get("/redirect", redirect),
            web.get("/loop", loop_forever),
            web.get("/big", big),
            web.get("/slow", slow),
            web.get("/missing", missing),
            web.get("/binary", binary),
        ]
    )
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    state.port = server.sockets[0].getsockname()[1]
    yield state
    await runner.cleanup()


class FakeDns:
    """A resolver hook: names the test controls; counts lookups (pinning = one per hop)."""

    def __init__(self, names: dict[str, IPAddress]) -> None:
        self.names = names
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.lookups.append(host)
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        if host == "localhost":
            return [LOOPBACK]
        if host not in self.names:
            raise RefusedError(f"{host} could not be resolved")
        return [self.names[host]]


def make(
    allow: list[str] | None = None,
    dns: FakeDns | None = None,
    **overrides: float,
) -> HttpFetchTool:
    settings = HttpFetchSettings(allow_hosts=allow or [], **overrides)  # type: ignore[arg-type]
    if dns is None:
        return HttpFetchTool(settings, max_output_chars=2_000)
    return HttpFetchTool(settings, max_output_chars=2_000, resolver=dns)


def ctx(timeout_s: float = 30) -> ToolCallContext:
    return ToolCallContext("t1", "a1", "s1", "r1", "c1", Path("/nonexistent"), timeout_s)


async def fetch(tool: HttpFetchTool, url: str, timeout_s: float = 30) -> ToolOutcome:
    return await tool.run({"url": url}, ctx(timeout_s))


def test_spec() -> None:
    tool = make()
    check_schema(tool.spec)
    assert tool.spec.name == "http_fetch"
    assert tool.spec.idempotent is True


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:{port}/secret", "loopback"),
        ("http://localhost:{port}/secret", "loopback"),
        ("http://[::1]:{port}/secret", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata"),
        ("http://10.0.0.1/", "private"),
        ("http://192.168.0.10:8080/admin", "private"),
        ("http://172.20.1.1/", "private"),
        ("http://0.0.0.0:{port}/secret", "unspecified"),
        ("http://[::ffff:127.0.0.1]:{port}/secret", "loopback"),
    ],
)
async def test_non_public_targets_are_refused_before_connecting(
    upstream: Upstream, url: str, reason: str
) -> None:
    # The system resolver: literals and /etc/hosts names only, so no query leaves the machine.
    outcome = await fetch(make(), url.format(port=upstream.port))
    assert outcome.status == "error"
    assert outcome.detail["refused"] is True
    assert f"is a {reason} address" in outcome.output
    assert "secret" not in outcome.output.split("address")[-1]
    assert upstream.paths == []


async def test_a_name_that_resolves_to_loopback_is_refused(upstream: Upstream) -> None:
    dns = FakeDns({"innocent.example": LOOPBACK})
    outcome = await fetch(make(dns=dns), f"http://innocent.example:{upstream.port}/secret")
    assert outcome.status == "error"
    assert "innocent.example (it resolves to 127.0.0.1) is a loopback address" in outcome.output
    assert upstream.paths == []


async def test_schemes_and_credentials_are_refused() -> None:
    tool = make()
    for url, words in [
        ("file:///etc/passwd", "only http and https"),
        ("ftp://example.org/x", "only http and https"),
        ("gopher://127.0.0.1:6379/_INFO", "only http and https"),
        ("http://user:pw@example.org/", "credentials"),
        ("http:///nohost", "names no host"),
    ]:
        outcome = await fetch(tool, url)
        assert outcome.status == "error", url
        assert words in outcome.output, (url, outcome.output)


async def test_an_allow_listed_local_server_is_fetched_by_its_pinned_address(
    upstream: Upstream,
) -> None:
    # `pinned.test` exists only in the test's resolver: the fetch can only have reached the
    # server through the address the check saw, while still sending the name as Host.
    dns = FakeDns({"pinned.test": LOOPBACK})
    tool = make(allow=["pinned.test"], dns=dns)
    outcome = await fetch(tool, f"http://pinned.test:{upstream.port}/page")
    assert outcome.status == "ok", outcome.output
    assert outcome.output == "Hi\n\nHello there"
    assert outcome.detail["status"] == 200
    assert outcome.detail["content_type"].startswith("text/html")
    assert upstream.hosts == [f"pinned.test:{upstream.port}"]
    assert dns.lookups == ["pinned.test"]


async def test_allow_listing_an_address_or_network_works_too(upstream: Upstream) -> None:
    for allow in (["127.0.0.1"], ["127.0.0.0/8"]):
        outcome = await fetch(make(allow=allow), upstream.url("/plain"))
        assert outcome.status == "ok", outcome.output
        assert outcome.output == "plain text"


async def test_a_redirect_to_loopback_is_refused(upstream: Upstream) -> None:
    dns = FakeDns({"allowed.test": LOOPBACK, "rebind.test": LOOPBACK})
    tool = make(allow=["allowed.test"], dns=dns)
    start = f"http://allowed.test:{upstream.port}/redirect?to="
    for target in (
        upstream.url("/secret"),
        upstream.url("/secret", host="localhost"),
        upstream.url("/secret", host="rebind.test"),
        "http://169.254.169.254/latest/meta-data/",
    ):
        outcome = await fetch(tool, start + target)
        assert outcome.status == "error", target
        assert outcome.detail["refused"] is True
        assert outcome.detail["redirects"] == [target]
        assert "the loopback secret" not in outcome.output
    assert "/secret" not in upstream.paths
    # One lookup per hop: the first host, then the redirect's host (literals are looked up by
    # this fake too, which is what makes the count visible).
    assert dns.lookups[:2] == ["allowed.test", "127.0.0.1"]


async def test_a_redirect_within_the_allow_list_is_followed(upstream: Upstream) -> None:
    tool = make(allow=["127.0.0.1"])
    outcome = await fetch(tool, upstream.url("/redirect?to=/plain"))
    assert outcome.status == "ok"
    assert outcome.output == "plain text"
    assert outcome.detail["redirects"] == [upstream.url("/plain")]
    scheme = await fetch(tool, upstream.url("/redirect?to=file:///etc/passwd"))
    assert scheme.status == "error" and "only http and https" in scheme.output


async def test_redirects_are_bounded(upstream: Upstream) -> None:
    tool = make(allow=["127.0.0.1"], max_redirects=3)
    outcome = await fetch(tool, upstream.url("/loop"))
    assert outcome.status == "error"
    assert "more than 3 redirects" in outcome.output
    assert upstream.paths.count("/loop") == 4


async def test_the_body_is_capped_and_reading_stops(upstream: Upstream) -> None:
    tool = make(allow=["127.0.0.1"], max_bytes=100_000)
    outcome = await fetch(tool, upstream.url("/big"))
    assert outcome.status == "ok"
    assert outcome.detail["bytes"] == 100_000
    assert outcome.detail["truncated"] is True
    # The model's text is cut too, and says so.
    assert len(outcome.output) < 2_200
    assert outcome.output.endswith("more characters not shown]")


async def test_the_time_cap_ends_a_slow_fetch(upstream: Upstream) -> None:
    tool = make(allow=["127.0.0.1"], timeout_s=0.5)
    outcome = await fetch(tool, upstream.url("/slow"))
    assert outcome.status == "error"
    assert outcome.output.startswith("timed out")
    assert outcome.detail["timeout_s"] == 0.5
    # The call's own budget wins when it is shorter.
    short = await fetch(make(allow=["127.0.0.1"]), upstream.url("/slow"), timeout_s=0.3)
    assert short.detail["timeout_s"] == 0.3


async def test_http_errors_and_binary_bodies(upstream: Upstream) -> None:
    tool = make(allow=["127.0.0.1"])
    missing = await fetch(tool, upstream.url("/missing"))
    assert missing.status == "error"
    assert missing.output == "HTTP 404 Not Found\n\nno such page"
    assert missing.detail["status"] == 404
    binary = await fetch(tool, upstream.url("/binary"))
    assert binary.status == "ok"
    assert binary.output == "[binary content: image/png, 6 bytes]"
    closed = await fetch(tool, "http://127.0.0.1:1/")
    assert closed.status == "error" and "failed" in closed.output


def tls_files(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `name` only (no IP address in it), and its key."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_https_verifies_the_name_while_connecting_to_the_pinned_address(
    tmp_path: Path,
) -> None:
    import ssl

    cert, key = tls_files(tmp_path, "pinned.test")
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(cert, key)
    seen: list[str] = []

    async def hello(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Host", ""))
        return web.Response(text="over tls", content_type="text/plain")

    app = web.Application()
    app.add_routes([web.get("/hello", hello)])
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl)
    await site.start()
    try:
        assert site._server is not None
        port = site._server.sockets[0].getsockname()[1]
        trust = ssl.create_default_context(cafile=str(cert))
        dns = FakeDns({"pinned.test": LOOPBACK})
        settings = HttpFetchSettings(allow_hosts=["pinned.test", "127.0.0.1"])
        tool = HttpFetchTool(settings, 2_000, resolver=dns, ssl_context=trust)
        # SNI and the certificate check use the name; the socket goes to the checked address.
        outcome = await fetch(tool, f"https://pinned.test:{port}/hello")
        assert outcome.status == "ok", outcome.output
        assert outcome.output == "over tls"
        assert seen == [f"pinned.test:{port}"]
        # The same server by its address fails verification: the name is what is verified.
        by_address = await fetch(tool, f"https://127.0.0.1:{port}/hello")
        assert by_address.status == "error"
        assert "certificate" in by_address.output.lower()
        assert seen == [f"pinned.test:{port}"]
    finally:
        await runner.cleanup()
