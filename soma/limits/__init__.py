"""Per-tenant and per-key limits: request rates, runs in flight and LLM token budgets."""
