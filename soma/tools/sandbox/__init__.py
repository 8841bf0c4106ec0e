"""The sandbox the `python` and `shell` built-ins run in (bubblewrap namespaces, rlimits)."""
