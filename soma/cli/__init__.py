"""The `soma` command: a client of the public HTTP API (never of the platform's internals)."""
