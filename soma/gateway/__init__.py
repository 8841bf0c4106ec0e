"""The HTTP API of the platform: tenancy, API keys, agents, sessions (ARCHITECTURE §9)."""
