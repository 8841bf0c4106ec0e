"""pytest plugin: a throwaway redis server for the integration tests."""
