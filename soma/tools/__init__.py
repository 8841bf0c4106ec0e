"""Tools: the catalog (built-ins and MCP servers), the sandbox, and the tools service."""
