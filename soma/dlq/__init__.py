"""Dead letters: bus messages that failed too often, kept for inspection and replay."""
