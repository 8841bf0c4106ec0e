"""The last resort: an unhandled exception becomes a bare 500 problem and a log line without
the exception's message (messages may echo user input; types and frames do not)."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from starlette.types import Scope

_log = logging.getLogger("soma.http.errors")
MAX_FRAMES = 30
MAX_CHAIN = 5


def exception_outline(exc: BaseException) -> dict[str, Any]:
    """Type and `file:line in function` frames of `exc` and its causes; never the messages."""
    chain: list[dict[str, Any]] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < MAX_CHAIN:
        frames = traceback.extract_tb(current.__traceback__)[-MAX_FRAMES:]
        chain.append(
            {
                "type": f"{type(current).__module__}.{type(current).__qualname__}",
                "frames": [f"{f.filename}:{f.lineno} in {f.name}" for f in frames],
            }
        )
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return {"exc_type": chain[0]["type"], "exc_chain": chain}


def log_unhandled(exc: BaseException, scope: Scope) -> None:
    route: Any = scope.get("route")
    template = getattr(route, "path", None) or "unmatched"
    # The route template, not the path: the path carries ids and other caller input.
    _log.error(
        "unhandled %s in %s %s",
        type(exc).__qualname__,
        scope.get("method", "?"),
        template,
        extra=exception_outline(exc),
    )
