"""Built-in tools: `files`, `http_fetch`, and the sandboxed `python` and `shell`."""
