"""Field types shared by the request bodies."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
"""Names double as OpenAI-compatible model names and URL parts, so they stay plain."""

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=NAME_PATTERN)]
EndUser = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="The application's name for an end user (opaque to the platform).",
    ),
]

METADATA_MAX_BYTES = 16_384
"""Serialized (compact JSON) size of one `metadata` object."""
METADATA_MAX_DEPTH = 8
"""Nesting levels of objects and arrays, the `metadata` object itself being level 1."""
METADATA_MAX_KEYS = 256
"""Object members and array items, counted over all levels."""
METADATA_MAX_KEY_CHARS = 256
METADATA_MAX_STRING_CHARS = 8_192
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Walk without recursion, so a deep value costs a loop, never the stack."""
    entries = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > METADATA_MAX_DEPTH:
                raise ValueError(f"metadata nests deeper than {METADATA_MAX_DEPTH} levels")
            entries += len(node)
            if entries > METADATA_MAX_KEYS:
                raise ValueError(f"metadata has more than {METADATA_MAX_KEYS} keys and items")
            for key, item in node.items():
                if len(key) > METADATA_MAX_KEY_CHARS:
                    raise ValueError(f"metadata keys are at most {METADATA_MAX_KEY_CHARS} chars")
                stack.append((item, depth + 1))
        elif isinstance(node, list):
            if depth > METADATA_MAX_DEPTH:
                raise ValueError(f"metadata nests deeper than {METADATA_MAX_DEPTH} levels")
            entries += len(node)
            if entries > METADATA_MAX_KEYS:
                raise ValueError(f"metadata has more than {METADATA_MAX_KEYS} keys and items")
            stack.extend((item, depth + 1) for item in node)
        elif isinstance(node, str):
            if len(node) > METADATA_MAX_STRING_CHARS:
                raise ValueError(f"metadata strings are at most {METADATA_MAX_STRING_CHARS} chars")
        elif isinstance(node, bool) or node is None:
            pass
        elif isinstance(node, int):
            if not INT64_MIN <= node <= INT64_MAX:
                raise ValueError("metadata integers must fit in a signed 64-bit integer")
        elif isinstance(node, float):
            # orjson reads integers beyond 64 bits as floats: refuse those magnitudes too.
            if not INT64_MIN <= node <= INT64_MAX:
                raise ValueError("metadata numbers must be within the signed 64-bit range")
        else:
            raise ValueError(f"metadata cannot hold a {type(node).__name__}")
    if len(orjson.dumps(value)) > METADATA_MAX_BYTES:
        raise ValueError(f"metadata is larger than {METADATA_MAX_BYTES} bytes as JSON")
    return value


_METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": True,
    "maxProperties": METADATA_MAX_KEYS,
    "description": (
        f"Free-form JSON object: at most {METADATA_MAX_BYTES} bytes as JSON, "
        f"{METADATA_MAX_DEPTH} levels deep, {METADATA_MAX_KEYS} keys and items in all, "
        f"strings of at most {METADATA_MAX_STRING_CHARS} chars, "
        "numbers within the signed 64-bit range."
    ),
}

Metadata = Annotated[
    dict[str, Any],
    AfterValidator(_check_metadata),
    WithJsonSchema(_METADATA_SCHEMA, mode="validation"),
]
"""Caller-supplied `metadata` of a request body, bounded so it can be stored and echoed."""

StoredMetadata = dict[str, Any]
"""`metadata` in a response: whatever was stored, not validated again on the way out."""


class RequestBody(BaseModel):
    """Unknown fields are an error, so a typo never silently does nothing; values are not
    coerced across JSON types (`0` is not `false`, `"5"` is not `5`), as the schema says."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ResponseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
