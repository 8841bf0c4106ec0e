"""Secrets out of URLs: userinfo (`user:pass@`) and secret query parameters become `***`."""

from __future__ import annotations

import re

MASK = "***"

# A parameter is secret when its normalised name contains one of these; over-masking an
# innocent parameter costs nothing, missing a secret one leaks it.
_SECRET_WORDS = (
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "sig",
    "credential",
    "auth",
    "code",
)
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>\\`]+")
_PARAM = re.compile(r"(?P<lead>[?&;#])(?P<name>[^=&;#?\s\"'<>]+)=(?P<value>[^&;#\s\"'<>]*)")


def is_secret_parameter(name: str) -> bool:
    normalised = name.lower().replace("-", "_")
    return any(word in normalised for word in _SECRET_WORDS)


def redact_url(url: str) -> str:
    """`url` with its userinfo and the values of secret parameters replaced by `***`."""
    scheme, separator, rest = url.partition("://")
    if separator:
        end = len(rest)
        for delimiter in "/?#":
            found = rest.find(delimiter)
            if found != -1:
                end = min(end, found)
        authority, tail = rest[:end], rest[end:]
        if "@" in authority:
            # Everything before the last "@" is userinfo, whatever characters it holds.
            authority = f"{MASK}@{authority.rsplit('@', 1)[1]}"
        url = f"{scheme}://{authority}{tail}"
    return _PARAM.sub(_mask_parameter, url)


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted, and secret parameters of partial URLs too."""
    if "://" not in text and "=" not in text:
        return text
    text = _URL.sub(lambda match: redact_url(match.group(0)), text)
    return _PARAM.sub(_mask_parameter, text)


def _mask_parameter(match: re.Match[str]) -> str:
    name = match.group("name")
    if not is_secret_parameter(name) or match.group("value") == MASK:
        return match.group(0)
    return f"{match.group('lead')}{name}={MASK}"
