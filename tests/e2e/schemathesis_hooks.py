"""Schemathesis hooks for the OpenAPI fuzz test: never let the fuzzer revoke its own keys
or throttle itself for the rest of the run, nor send a form field the wire cannot carry.

Loaded by the `st` subprocess via SCHEMATHESIS_HOOKS; the test that starts it sets
FUZZ_PROTECTED_KEY_IDS (comma-separated), FUZZ_BASE_URL and FUZZ_KEY.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import schemathesis

PROTECTED = frozenset(filter(None, os.environ.get("FUZZ_PROTECTED_KEY_IDS", "").split(",")))
STAND_IN = "0" * 32
"""A well-formed key id that exists nowhere (the route answers 404)."""


def _admin(method: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.request(
        method,
        f"{os.environ['FUZZ_BASE_URL']}{path}",
        json=body,
        headers={"Authorization": f"Bearer {os.environ['FUZZ_KEY']}"},
        timeout=30,
    )


def _throwaway_key(tenant_id: str | None) -> str:
    """A fresh key to change instead of a protected one, so the call means what it says.

    A stand-in that does not exist would answer 404 where a key was just listed or created,
    which schemathesis rightly reports. Keys the caller may not create get the stand-in.
    """
    body: dict[str, Any] = {"name": "fuzz-stand-in", "scopes": ["chat"]}
    if tenant_id is not None:
        body["tenant_id"] = tenant_id
    created = _admin("POST", "/v1/admin/keys", body)
    if created.status_code != 201:
        return STAND_IN
    key_id: str = created.json()["id"]
    return key_id


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    # Runs before every request of every phase, including stateful links that reuse ids
    # read from `GET /v1/admin/keys`. Reading a protected key changes nothing.
    parameters = case.path_parameters
    if case.method.upper() == "GET" or not parameters:
        return
    if parameters.get("key_id") in PROTECTED:
        tenant_id = (case.query or {}).get("tenant_id")
        parameters["key_id"] = _throwaway_key(tenant_id if isinstance(tenant_id, str) else None)


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    # A tenant's limits set to a trickle (valid input, answered 200) would leave every later
    # request a 429 and the rest of the run untested: put the defaults back at once.
    tenant_id = (case.path_parameters or {}).get("tenant_id")
    if case.method.upper() == "PATCH" and tenant_id and response.status_code == 200:
        defaults = dict.fromkeys(response.json().get("overrides", {}))
        _admin("PATCH", f"/v1/admin/tenants/{tenant_id}", {"limits": defaults})


@schemathesis.hook("filter_body").apply_to(method="POST", path="/v1/uploads")
def filter_body(context: Any, body: Any) -> bool:
    # An empty list as a form field goes out as no part at all: the fuzzer's "array instead of
    # a string" for `session_id` arrives as a valid upload without a session, and its 201
    # would read as accepted invalid data. A list of two or more is a repeated field (a 422).
    fields = getattr(body, "body", body)  # a form with per-part content types wraps its fields
    return not (isinstance(fields, dict) and any(value == [] for value in fields.values()))
