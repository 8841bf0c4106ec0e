"""The OpenAI-compatible doors: models, Chat Completions and Responses."""
