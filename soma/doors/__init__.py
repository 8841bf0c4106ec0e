"""Standard front doors over the same runs: OpenAI (Chat Completions, Responses) and A2A."""
