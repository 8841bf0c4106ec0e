"""MCP tools and results in the platform's terms: `ToolSpec` in, `ToolOutcome` out."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from mcp_types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)
from mcp_types import Tool as McpTool

from soma.tools.catalog import CatalogError, check_schema
from soma.tools.port import ToolOutcome, ToolSpec

log = logging.getLogger(__name__)

SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""Server names never contain the `.` that separates them from their tools' names."""
TOOL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
"""What the MCP specification allows a tool name to be."""
MAX_DESCRIPTION = 4_000
MAX_STRUCTURED_CHARS = 64_000
"""Structured content larger than this (as JSON) stays out of `detail`; its text remains."""


def spec_for(server: str, tool: McpTool) -> ToolSpec | None:
    """The catalog entry of one listed tool; None (logged) for a tool the catalog cannot take."""
    if not TOOL_NAME.fullmatch(tool.name):
        log.warning("MCP server %s: tool name %r is not usable; skipped", server, tool.name[:80])
        return None
    hints = tool.annotations
    # A read-only tool has no effect to repeat; an idempotent one repeats to the same state.
    idempotent = bool(hints and (hints.read_only_hint or hints.idempotent_hint))
    description = tool.description or (hints.title if hints and hints.title else None) or ""
    spec = ToolSpec(
        name=f"{server}.{tool.name}",
        description=description[:MAX_DESCRIPTION],
        parameters=dict(tool.input_schema),
        idempotent=idempotent,
        source=f"mcp:{server}",
    )
    try:
        check_schema(spec)
    except CatalogError as exc:
        log.warning("MCP server %s: %s; skipped", server, exc)
        return None
    return spec


def outcome_for(server: str, tool: str, result: CallToolResult, max_chars: int) -> ToolOutcome:
    """The model reads the text blocks (others are named); `isError` makes it an error."""
    parts = [_block_text(block) for block in result.content]
    text = "\n".join(part for part in parts if part)
    structured = result.structured_content
    if not text and structured is not None:
        text = json.dumps(structured, ensure_ascii=False)
    if len(text) > max_chars:
        text = text[:max_chars] + f"\n[... {len(text) - max_chars} more characters not shown]"
    detail: dict[str, Any] = {"server": server, "tool": tool}
    if structured is not None:
        encoded = json.dumps(structured, ensure_ascii=False, default=str)
        if len(encoded) <= MAX_STRUCTURED_CHARS:
            detail["structured"] = structured
        else:
            detail["structured_omitted_chars"] = len(encoded)
    return ToolOutcome("error" if result.is_error else "ok", text, detail)


def _block_text(block: Any) -> str:
    if isinstance(block, TextContent):
        return block.text
    if isinstance(block, ImageContent):
        return f"[image: {block.mime_type}, {_decoded_size(block.data)} bytes]"
    if isinstance(block, AudioContent):
        return f"[audio: {block.mime_type}, {_decoded_size(block.data)} bytes]"
    if isinstance(block, ResourceLink):
        return f"[resource link: {block.uri}]"
    if isinstance(block, EmbeddedResource):
        resource = block.resource
        if isinstance(resource, TextResourceContents):
            return resource.text
        if isinstance(resource, BlobResourceContents):
            return f"[binary resource: {resource.uri}, {resource.mime_type or 'unknown type'}]"
    kind = getattr(block, "type", "unknown")
    return f"[{kind} content]"


def _decoded_size(data: str) -> int:
    """Bytes a base64 string holds, without decoding it."""
    return len(data) * 3 // 4 - data[-2:].count("=")
