"""Bounded `Metadata`, opaque cursors, orjson bodies, the 405 `Allow` list and the fd limit."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError

from soma.gateway.errors import install_problem_handlers
from soma.gateway.json_route import JsonRoute
from soma.gateway.pagination import decode_cursor, encode_cursor
from soma.gateway.schemas.common import (
    METADATA_MAX_BYTES,
    METADATA_MAX_DEPTH,
    METADATA_MAX_KEYS,
    Metadata,
)


class Body(BaseModel):
    metadata: Metadata


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "metadata",
    [
        {"n": 2**63},
        {"n": -(2**63) - 1},
        {"deep": [1, {"n": 10**30}]},
        {"f": 1e23},  # what orjson makes of an integer beyond 64 bits
        _nested(METADATA_MAX_DEPTH + 1),
        _nested(5_000),  # far past the recursion limit: walked with a loop
        {f"k{i}": i for i in range(METADATA_MAX_KEYS + 1)},
        {"s": "x" * (METADATA_MAX_BYTES + 1)},
        {"k" * 300: 1},
        {"a": ["x" * 8_000, "y" * 8_000, "z" * 8_000]},
    ],
    ids=[
        "int64-max+1",
        "int64-min-1",
        "nested-bigint",
        "bigint-as-float",
        "too-deep",
        "very-deep",
        "too-many-keys",
        "too-large",
        "long-key",
        "too-large-in-all",
    ],
)
def test_metadata_out_of_bounds_is_refused(metadata: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Body(metadata=metadata)


def test_metadata_within_bounds_is_kept_as_is() -> None:
    value = {
        "n": 2**63 - 1,
        "m": -(2**63),
        "f": 0.5,
        "nested": _nested(METADATA_MAX_DEPTH - 1),
        "list": [None, True, "s"],
    }
    assert Body(metadata=value).metadata == value


def test_cursors_round_trip_and_refuse_what_they_did_not_issue() -> None:
    token = encode_cursor("/v1/sessions", "01a23ae0")
    assert decode_cursor("/v1/sessions", token) == "01a23ae0"
    for bogus in ("bogus", "0", token + "x", token.replace(".", ""), "ä.ö", "AAAA.AAAA"):
        with pytest.raises(ValueError):
            decode_cursor("/v1/sessions", bogus)
    with pytest.raises(ValueError):
        decode_cursor("/v1/agents", token)  # another list's cursor


def _app() -> TestClient:
    app = FastAPI()
    router = APIRouter(prefix="/items", route_class=JsonRoute)

    @router.get("/{item_id}")
    async def get(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    @router.delete("/{item_id}")
    async def delete(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    @router.post("")
    async def create(body: Body) -> dict[str, int]:
        return {"keys": len(body.metadata)}

    outer = APIRouter()
    outer.include_router(router)
    app.include_router(outer)
    install_problem_handlers(app)
    return TestClient(app)


def test_405_names_every_method_of_the_path_even_in_nested_routers() -> None:
    response = _app().put("/items/1")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET"
    assert response.headers["content-type"] == "application/problem+json"


def test_json_nested_past_1024_levels_is_a_422_not_a_recursion_error() -> None:
    client = _app()
    deep = '{"metadata":' + "[" * 100_000 + "]" * 100_000 + "}"
    response = client.post("/items", content=deep, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["msg"] == "JSON decode error"
    within = client.post("/items", json={"metadata": {"a": 1}})
    assert within.status_code == 200 and within.json() == {"keys": 1}


def test_raise_fd_limit_lifts_the_soft_limit_to_the_hard_one() -> None:
    script = (
        "import resource\n"
        "from orchestrator.http_protocol import raise_fd_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "now = raise_fd_limit()\n"
        "print(now == resource.getrlimit(resource.RLIMIT_NOFILE)[0], now > 256)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["True", "True"], done.stderr
