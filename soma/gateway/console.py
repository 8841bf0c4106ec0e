"""The web console at `/`: the static files of `soma.console`, public (the pages carry no data;
every API call they make carries the key), under the console's strict CSP (see security.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

CONSOLE_URL = "/"
ASSET_PREFIX = "/console/"
INDEX = "index.html"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Revalidated on every load (no stale console after an upgrade); the files are small.
_CACHE = {"Cache-Control": "no-cache"}


def console_files() -> dict[str, bytes]:
    """Every file the console serves, by name (read once, when the router is built)."""
    package = resources.files("soma.console")
    return {
        entry.name: entry.read_bytes()
        for entry in package.iterdir()
        if entry.is_file() and _suffix(entry.name) in MEDIA_TYPES
    }


def console_paths(files: dict[str, bytes]) -> list[str]:
    """The URL paths of the console: `/` and one per asset (the edge sets their headers)."""
    return [CONSOLE_URL, *(ASSET_PREFIX + name for name in sorted(files) if name != INDEX)]


def console_router(files: dict[str, bytes]) -> APIRouter:
    """`GET /` (the page) and `GET /console/{name}` (its modules, styles, icon)."""
    router = APIRouter(include_in_schema=False)
    index = files[INDEX]

    @router.get(CONSOLE_URL)
    async def page() -> Response:
        return Response(index, media_type=MEDIA_TYPES[".html"], headers=_CACHE)

    for name, body in files.items():
        if name != INDEX:
            router.add_api_route(ASSET_PREFIX + name, _asset(name, body), methods=["GET"])
    return router


def _asset(name: str, body: bytes) -> Callable[[], Awaitable[Response]]:
    media_type = MEDIA_TYPES[_suffix(name)]

    async def asset() -> Response:
        return Response(body, media_type=media_type, headers=_CACHE)

    return asset


def _suffix(name: str) -> str:
    return name[name.rfind(".") :] if "." in name else ""
