"""pytest plugin: a throwaway kafka server for the integration tests."""
