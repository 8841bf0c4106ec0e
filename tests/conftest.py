"""Shared test configuration: the real-server harness plugins and the e2e launchers."""

pytest_plugins = [
    "tests.harness.postgres",
    "tests.harness.kafka",
    "tests.harness.redis",
    "tests.e2e.platform",
    "tests.e2e.stacks",
    "tests.support.storage_world",
    "tests.support.upstream",
]
