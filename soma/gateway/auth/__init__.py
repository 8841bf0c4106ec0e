"""API keys, the bootstrap admin key, and the authentication dependencies of every route."""
