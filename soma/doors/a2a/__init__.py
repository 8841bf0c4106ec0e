"""The A2A 1.0 door: Agent Cards and the JSON-RPC binding over durable runs."""
