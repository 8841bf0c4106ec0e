"""Routes whose JSON bodies are parsed by orjson: bounded depth, no RecursionError, and fast.

The standard library parser recurses once per nesting level, so a deep enough body raises
RecursionError somewhere in the stack. orjson refuses nesting beyond 1,024 levels with an
ordinary `JSONDecodeError` (FastAPI answers it with a 422), and parses several times faster.
Integers beyond 64 bits come back as floats; `Metadata` refuses numbers outside that range.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response


class JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class JsonRoute(APIRoute):
    """Pass as `APIRouter(route_class=JsonRoute)`; included routers keep their own class."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def parse_with_orjson(request: Request) -> Response:
            return await handler(JsonRequest(request.scope, request.receive))

        return parse_with_orjson
