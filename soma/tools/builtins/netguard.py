"""Which addresses `http_fetch` may connect to: SSRF rules, the allow-list, name resolution."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
"""Host name and port → the addresses to consider (all of them are checked)."""

_METADATA = tuple(
    ipaddress.ip_network(net)
    for net in (
        "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack, DigitalOcean instance metadata
        "fd00:ec2::254/128",  # AWS instance metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class RefusedError(Exception):
    """A URL or address `http_fetch` does not fetch; the message says why (for the model)."""


def blocked_reason(ip: IPAddress) -> str | None:
    """Why `ip` must not be fetched unless allow-listed; None for a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address smuggled inside IPv6 is judged as the IPv4 address it reaches.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is None and ip.teredo is not None:
            embedded = ip.teredo[1]
        if embedded is not None and (reason := blocked_reason(embedded)) is not None:
            return reason
    checks: tuple[tuple[bool, str], ...] = (
        (any(ip in net for net in _METADATA), "cloud metadata"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "non-public"),
    )
    for hit, reason in checks:
        if hit:
            return reason
    return None


class AllowList:
    """Host names (`name` or `*.domain`) and networks that may be fetched whatever they are."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._names: set[str] = set()
        self._suffixes: list[str] = []
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if entry.startswith("*."):
                self._suffixes.append(entry[1:])
            elif entry:
                self._names.add(entry)

    def allows_host(self, host: str) -> bool:
        name = host.lower().rstrip(".")
        return name in self._names or any(name.endswith(suffix) for suffix in self._suffixes)

    def allows_address(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self._networks)


def check_addresses(host: str, addresses: list[IPAddress], allow: AllowList) -> None:
    """Raise `RefusedError` unless every address of `host` may be fetched."""
    if not addresses:
        raise RefusedError(f"{host} has no address")
    if allow.allows_host(host):
        return
    for ip in addresses:
        reason = blocked_reason(ip)
        if reason is not None and not allow.allows_address(ip):
            shown = "" if _is_literal(host) else f" (it resolves to {ip})"
            raise RefusedError(
                f"refused: {host}{shown} is a {reason} address; only public addresses are "
                "fetched unless tools.http_fetch.allow_hosts names it"
            )


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The platform's resolver (getaddrinfo), once per hop; literals are not looked up."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise RefusedError(f"{host} could not be resolved ({exc.strerror})") from None
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in found:
            found.append(ip)
    return found


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _is_literal(host: str) -> bool:
    return _literal(host) is not None
