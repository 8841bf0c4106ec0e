"""MCP client: each configured MCP server is a tool provider whose tools are `<server>.<tool>`."""

from soma.tools.mcp.provider import McpProvider, mcp_providers

__all__ = ["McpProvider", "mcp_providers"]
