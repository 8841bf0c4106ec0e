"""The `http_fetch` built-in: GET a public http(s) URL, pinned to the address that was checked."""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from soma.config.tools import HttpFetchSettings
from soma.tools.builtins.html_text import html_to_text
from soma.tools.builtins.netguard import (
    AllowList,
    IPAddress,
    RefusedError,
    Resolver,
    check_addresses,
    system_resolver,
)
from soma.tools.port import ToolCallContext, ToolOutcome, ToolSpec

_REDIRECTS = {301, 302, 303, 307, 308}
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript")
_TEXT_SUFFIXES = ("+json", "+xml")
_CHUNK = 64 * 1024

SPEC = ToolSpec(
    name="http_fetch",
    description=(
        "Fetch a web page or document with HTTP GET and read it as text (HTML is reduced to its "
        "visible text). Only public http/https addresses; large bodies are cut."
    ),
    parameters={
        "type": "object",
        "properties": {
            "url": {
                "type": "string",
                "maxLength": 4096,
                "description": "An absolute http:// or https:// URL.",
            },
        },
        "required": ["url"],
        "additionalProperties": False,
    },
    # GET only: reading the same URL again after a crash interrupted a fetch is safe.
    idempotent=True,
)


@dataclass(slots=True)
class _Page:
    url: str
    status: int
    reason: str
    content_type: str
    charset: str | None
    body: bytes
    truncated: bool
    redirects: list[str] = field(default_factory=list)


class HttpFetchTool:
    """`http_fetch`: each hop's host resolved once, checked, and connected to by that address."""

    def __init__(
        self,
        settings: HttpFetchSettings,
        max_output_chars: int,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._settings = settings
        self._allow = AllowList(settings.allow_hosts)
        self._max_chars = max_output_chars
        self._resolve = resolver
        self._ssl = ssl_context if ssl_context is not None else ssl.create_default_context()

    @property
    def spec(self) -> ToolSpec:
        return SPEC

    async def run(self, args: dict[str, Any], call: ToolCallContext) -> ToolOutcome:
        url = args.get("url")
        if not isinstance(url, str):
            return ToolOutcome.error("'url' must be a string")
        budget = min(self._settings.timeout_s, call.timeout_s)
        redirects: list[str] = []
        try:
            async with asyncio.timeout(budget):
                page = await self._fetch(url, redirects)
        except RefusedError as exc:
            return ToolOutcome.error(str(exc), url=url, refused=True, redirects=redirects)
        except TimeoutError:
            return ToolOutcome.error(
                f"timed out: {url} did not answer in full within {budget:g} s",
                url=url,
                timeout_s=budget,
                redirects=redirects,
            )
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return ToolOutcome.error(
                f"fetching {url} failed: {_short(exc)}", url=url, redirects=redirects
            )
        return self._outcome(page)

    async def _fetch(self, url: str, redirects: list[str]) -> _Page:
        current = _checked_url(url)
        for _hop in range(self._settings.max_redirects + 1):
            answer = await self._get(current)
            if isinstance(answer, _Page):
                answer.redirects = redirects
                return answer
            # Every hop is a new URL: scheme, host and addresses are checked again.
            current = _checked_url(str(current.join(URL(answer))))
            redirects.append(str(current))
        raise RefusedError(f"refused: more than {self._settings.max_redirects} redirects")

    async def _get(self, url: URL) -> _Page | str:
        """The page at `url`, or where it redirects to."""
        host = url.raw_host or ""
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = await self._resolve(host.strip("[]"), port)
        check_addresses(host.strip("[]"), addresses, self._allow)
        connector = aiohttp.TCPConnector(
            resolver=_PinnedResolver(host, addresses[0]),
            use_dns_cache=False,
            force_close=True,
            ssl=self._ssl,
        )
        headers = {"User-Agent": self._settings.user_agent, "Accept": "*/*"}
        async with (
            aiohttp.ClientSession(connector=connector, trust_env=False) as session,
            session.get(url, allow_redirects=False, headers=headers) as response,
        ):
            content_type = response.headers.get("Content-Type", "")
            location = response.headers.get("Location")
            if response.status in _REDIRECTS and location:
                return location
            body, truncated = await _read_capped(response, self._settings.max_bytes)
            return _Page(
                url=str(url),
                status=response.status,
                reason=response.reason or "",
                content_type=content_type,
                charset=response.charset,
                body=body,
                truncated=truncated,
            )

    def _outcome(self, page: _Page) -> ToolOutcome:
        media = page.content_type.split(";", 1)[0].strip().lower()
        text = _as_text(page.body, media, page.charset)
        if text is None:
            output = f"[binary content: {media or 'unknown type'}, {len(page.body)} bytes]"
        else:
            output = html_to_text(text) if media in ("text/html", "application/xhtml+xml") else text
        if page.truncated:
            output += f"\n[... the body was cut at {self._settings.max_bytes} bytes]"
        if len(output) > self._max_chars:
            cut = len(output) - self._max_chars
            output = output[: self._max_chars] + f"\n[... {cut} more characters not shown]"
        detail: dict[str, Any] = {
            "url": page.url,
            "status": page.status,
            "content_type": page.content_type,
            "bytes": len(page.body),
            "truncated": page.truncated,
            "redirects": page.redirects,
        }
        if page.status >= 400:
            return ToolOutcome.error(f"HTTP {page.status} {page.reason}\n\n{output}", **detail)
        return ToolOutcome.ok(output, **detail)


class _PinnedResolver(AbstractResolver):
    """Answers aiohttp's lookup with the address already checked: no second DNS query."""

    def __init__(self, host: str, address: IPAddress) -> None:
        self._host = host
        self._address = address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != self._host:
            raise OSError(f"unexpected lookup of {host!r}")
        af = socket.AF_INET6 if self._address.version == 6 else socket.AF_INET
        pinned = ResolveResult(
            hostname=host,
            host=str(self._address),
            port=port,
            family=af,
            proto=0,
            flags=socket.AI_NUMERICHOST,
        )
        return [pinned]

    async def close(self) -> None:
        return None


def _checked_url(raw: str) -> URL:
    try:
        url = URL(raw.strip())
    except (ValueError, TypeError):
        raise RefusedError(f"refused: {raw!r} is not a valid URL") from None
    if url.scheme not in ("http", "https"):
        raise RefusedError(f"refused: only http and https URLs are fetched, not {url.scheme!r}")
    if not url.raw_host:
        raise RefusedError(f"refused: {raw!r} names no host")
    if url.raw_user is not None or url.raw_password is not None:
        raise RefusedError("refused: URLs with credentials (user@host) are not fetched")
    return url.with_fragment(None)


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """Up to `limit` bytes of the (decoded) body; stops reading as soon as there is more."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        if size + len(chunk) > limit:
            chunks.append(chunk[: limit - size])
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False


def _as_text(body: bytes, media: str, charset: str | None) -> str | None:
    textual = media.startswith(_TEXT_TYPES) or media.endswith(_TEXT_SUFFIXES)
    if charset:
        try:
            return body.decode(charset, errors="replace")
        except LookupError:
            pass
    if textual:
        return body.decode("utf-8", errors="replace")
    if b"\x00" in body:
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
