"""Shared test configuration: the real-server harness plugins."""

pytest_plugins = [
    "tests.harness.postgres",
    "tests.harness.kafka",
    "tests.harness.redis",
]
