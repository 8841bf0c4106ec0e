"""Alembic migrations of the storage schema, run in code by `soma.storage.migrate`."""
