"""Schemathesis hooks for the OpenAPI fuzz test: never let the fuzzer revoke its own keys.

Loaded by the `st` subprocess via SCHEMATHESIS_HOOKS; the ids to protect come in
FUZZ_PROTECTED_KEY_IDS (comma-separated), set by the test that starts it.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

PROTECTED = frozenset(filter(None, os.environ.get("FUZZ_PROTECTED_KEY_IDS", "").split(",")))
STAND_IN = "0" * 32
"""A well-formed key id that exists nowhere (the route answers 404)."""


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    # Runs before every request of every phase, including stateful links that reuse ids
    # read from `GET /v1/admin/keys`.
    parameters = case.path_parameters
    if parameters and parameters.get("key_id") in PROTECTED:
        parameters["key_id"] = STAND_IN
