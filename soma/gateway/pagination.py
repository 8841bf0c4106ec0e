"""Cursor pagination of every list endpoint: `?limit=&cursor=` → `{items, next_cursor}`.

A cursor is opaque to clients: the storage cursor (the last key seen) plus a check value
bound to the list's route, so a cursor this API did not issue for this list (mistyped,
truncated, from another list) answers 400 instead of silently paging from somewhere. The
check is not a secret: a hand-made cursor can only move within the caller's own list.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import Query, Request
from pydantic import BaseModel

from soma.gateway.problems import bad_request

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_CURSOR_CHARS = 200
_CHECK_BYTES = 8

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None
    """Pass as `cursor` for the next page; None on the last page."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check(route: str, key: bytes) -> bytes:
    return hashlib.blake2b(route.encode() + b"\0" + key, digest_size=_CHECK_BYTES).digest()


def encode_cursor(route: str, key: str) -> str:
    raw = key.encode()
    return f"{_b64(raw)}.{_b64(_check(route, raw))}"


def decode_cursor(route: str, cursor: str) -> str:
    """The storage cursor inside `cursor`; ValueError if this list never issued it."""
    encoded, dot, check = cursor.partition(".")
    if not dot or not encoded.isascii() or not check.isascii():
        raise ValueError("malformed cursor")
    try:
        raw = _unb64(encoded)
        expected = _unb64(check)
        key = raw.decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError("malformed cursor") from None
    if not hmac.compare_digest(expected, _check(route, raw)):
        raise ValueError("cursor was not issued by this list")
    return key


@dataclass(frozen=True, slots=True)
class PageRequest:
    limit: int
    cursor: str | None
    """The storage cursor (decoded and checked)."""
    route: str

    def page(self, items: list[T], next_cursor: str | None) -> Page[T]:
        """The response page, with the storage `next_cursor` made opaque."""
        token = None if next_cursor is None else encode_cursor(self.route, next_cursor)
        return Page(items=items, next_cursor=token)


async def page_request(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_CURSOR_CHARS,
            description="`next_cursor` of the previous page; any other value answers 400.",
        ),
    ] = None,
) -> PageRequest:
    """FastAPI dependency: the validated page parameters of a list request."""
    route = getattr(request.scope.get("route"), "path", request.url.path)
    if cursor is None:
        return PageRequest(limit=limit, cursor=None, route=route)
    try:
        key = decode_cursor(route, cursor)
    except ValueError as exc:
        raise bad_request(f"invalid cursor: {exc}") from None
    return PageRequest(limit=limit, cursor=key, route=route)
