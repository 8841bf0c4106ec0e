"""Field types shared by the request bodies."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
"""Names double as OpenAI-compatible model names and URL parts, so they stay plain."""

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=NAME_PATTERN)]
Metadata = dict[str, Any]


class RequestBody(BaseModel):
    """Unknown fields are an error, so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid")


class ResponseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
