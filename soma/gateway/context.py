"""What the gateway's route handlers share, built once by the GatewayService."""

from __future__ import annotations

from dataclasses import dataclass

from soma.config import Settings
from soma.gateway.auth.verifier import KeyVerifier
from soma.gateway.tenancy import Tenancy
from soma.limits.governor import Limits
from soma.storage.database import Database


@dataclass(frozen=True, slots=True)
class GatewayContext:
    settings: Settings
    database: Database
    tenancy: Tenancy
    verifier: KeyVerifier
    limits: Limits

    def declared_model(self, name: str) -> str | None:
        """The canonical name of a model in `llm.models` (names are lower-case), else None."""
        lowered = name.lower()
        return lowered if lowered in self.settings.llm.models else None
