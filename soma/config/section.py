"""The base of every settings section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Unknown keys are an error (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid")
