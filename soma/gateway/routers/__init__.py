"""One router module per concern of the HTTP API."""
