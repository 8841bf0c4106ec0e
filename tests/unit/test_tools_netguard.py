"""SSRF rules of `http_fetch`: which addresses are refused, what the allow-list opens."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from soma.config.tools import HttpFetchSettings
from soma.tools.builtins.html_text import html_to_text
from soma.tools.builtins.netguard import (
    AllowList,
    RefusedError,
    blocked_reason,
    check_addresses,
    system_resolver,
)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "private"),
        ("100.64.0.1", "non-public"),
        ("192.0.2.1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a00:1", "private"),
        ("2002:7f00:1::", "loopback"),
        ("2002:a9fe:a9fe::", "cloud metadata"),
    ],
)
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700::1111", "8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


def test_every_address_of_a_name_must_pass() -> None:
    allow = AllowList([])
    public = ipaddress.ip_address("1.1.1.1")
    loop = ipaddress.ip_address("127.0.0.1")
    check_addresses("example.org", [public], allow)
    with pytest.raises(RefusedError, match=r"example\.org \(it resolves to 127\.0\.0\.1\)"):
        check_addresses("example.org", [public, loop], allow)
    with pytest.raises(RefusedError, match="has no address"):
        check_addresses("example.org", [], allow)


def test_the_allow_list_opens_names_suffixes_and_networks() -> None:
    allow = AllowList(["Intranet.Example", "*.corp.example", "10.0.0.0/8", "::1"])
    loop = ipaddress.ip_address("127.0.0.1")
    check_addresses("intranet.example", [loop], allow)
    check_addresses("wiki.corp.example", [loop], allow)
    check_addresses("any.name", [ipaddress.ip_address("10.9.8.7")], allow)
    check_addresses("::1", [ipaddress.ip_address("::1")], allow)
    with pytest.raises(RefusedError):
        check_addresses("corp.example", [loop], allow)
    with pytest.raises(RefusedError):
        check_addresses("evilcorp.example", [loop], allow)
    with pytest.raises(RefusedError, match="loopback"):
        check_addresses("127.0.0.1", [loop], allow)


def test_allow_hosts_are_validated_in_settings() -> None:
    settings = HttpFetchSettings(allow_hosts=["Wiki.Example.", "*.corp.example", "10.0.0.0/8"])
    assert settings.allow_hosts == ["wiki.example", "*.corp.example", "10.0.0.0/8"]
    for bad in ["http://x", "a b", "10.0.0.0/99", "*", "user@host"]:
        with pytest.raises(ValidationError):
            HttpFetchSettings(allow_hosts=[bad])


async def test_the_system_resolver_answers_literals_without_lookup() -> None:
    assert await system_resolver("10.0.0.1", 80) == [ipaddress.ip_address("10.0.0.1")]
    assert await system_resolver("[::1]", 80) == [ipaddress.ip_address("::1")]
    local = await system_resolver("localhost", 80)
    assert local and all(blocked_reason(ip) == "loopback" for ip in local)


def test_html_is_reduced_to_visible_text() -> None:
    html = (
        "<html><head><title>T &amp; t</title><style>p{}</style>"
        "<script>alert(1)</script></head><body><h1>Head</h1><p>One   two</p>"
        "<div>three<br>four</div><noscript>no</noscript></body></html>"
    )
    assert html_to_text(html) == "T & t\n\nHead\n\nOne two\n\nthree\nfour"
