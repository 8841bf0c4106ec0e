"""pytest plugin: a throwaway postgres server for the integration tests."""
