"""MCP tools and results in the platform's terms: specs, hints, content blocks, errors."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from mcp_types import (
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
    Tool,
    ToolAnnotations,
)
from pydantic import ValidationError

from soma.config.tools import McpServerSettings
from soma.tools.mcp.convert import outcome_for, spec_for

SCHEMA: dict[str, Any] = {"type": "object", "properties": {"q": {"type": "string"}}}


def tool(name: str = "search", **fields: Any) -> Tool:
    return Tool(name=name, input_schema=fields.pop("input_schema", SCHEMA), **fields)


@pytest.mark.parametrize(
    ("hints", "idempotent"),
    [
        (None, False),
        (ToolAnnotations(read_only_hint=True), True),
        (ToolAnnotations(idempotent_hint=True), True),
        (ToolAnnotations(destructive_hint=True), False),
        (ToolAnnotations(read_only_hint=False, idempotent_hint=False), False),
    ],
)
def test_specs_are_namespaced_and_idempotent_only_by_hint(
    hints: ToolAnnotations | None, idempotent: bool
) -> None:
    spec = spec_for("docs", tool(description="Search the docs.", annotations=hints))
    assert spec is not None
    assert spec.name == "docs.search"
    assert spec.source == "mcp:docs"
    assert spec.description == "Search the docs."
    assert spec.parameters == SCHEMA
    assert spec.idempotent is idempotent


def test_tools_the_catalog_cannot_take_are_skipped() -> None:
    assert spec_for("docs", tool(name="has space")) is None
    assert spec_for("docs", tool(name="x" * 200)) is None
    assert spec_for("docs", tool(input_schema={"type": "array"})) is None
    assert spec_for("docs", tool(input_schema={"type": "object", "required": 5})) is None
    long = spec_for("docs", tool(description="d" * 10_000))
    assert long is not None and len(long.description) == 4_000


def test_text_blocks_become_the_output_and_is_error_an_error() -> None:
    result = CallToolResult(
        content=[TextContent(text="first"), TextContent(text="second")],
        structured_content={"n": 2},
    )
    outcome = outcome_for("docs", "search", result, max_chars=1_000)
    assert outcome.status == "ok"
    assert outcome.output == "first\nsecond"
    assert outcome.detail == {"server": "docs", "tool": "search", "structured": {"n": 2}}
    failed = outcome_for(
        "docs", "search", CallToolResult(content=[TextContent(text="no")], is_error=True), 100
    )
    assert failed.status == "error" and failed.output == "no"


def test_other_blocks_are_named_not_dumped() -> None:
    png = base64.b64encode(b"\x89PNG" + b"\x00" * 96).decode()
    result = CallToolResult(
        content=[
            ImageContent(data=png, mime_type="image/png"),
            ResourceLink(uri="file:///r.txt", name="r"),
            EmbeddedResource(resource=TextResourceContents(uri="mem://a", text="inline text")),
            EmbeddedResource(
                resource=BlobResourceContents(uri="mem://b", blob=png, mime_type="image/png")
            ),
        ]
    )
    outcome = outcome_for("s", "t", result, max_chars=1_000)
    assert outcome.output.splitlines() == [
        "[image: image/png, 100 bytes]",
        "[resource link: file:///r.txt]",
        "inline text",
        "[binary resource: mem://b, image/png]",
    ]


def test_structured_only_results_and_long_outputs() -> None:
    only = outcome_for("s", "t", CallToolResult(content=[], structured_content={"a": [1]}), 100)
    assert only.output == '{"a": [1]}'
    long = outcome_for("s", "t", CallToolResult(content=[TextContent(text="x" * 500)]), 100)
    assert long.output == "x" * 100 + "\n[... 400 more characters not shown]"
    huge = CallToolResult(content=[TextContent(text="ok")], structured_content={"x": "y" * 70_000})
    big = outcome_for("s", "t", huge, 100)
    assert "structured" not in big.detail
    assert big.detail["structured_omitted_chars"] > 70_000


def test_server_settings_need_exactly_one_usable_transport() -> None:
    McpServerSettings(command=["mcp-server"])
    McpServerSettings(url="https://mcp.example/mcp")
    for bad in (
        {},
        {"command": ["x"], "url": "http://x/mcp"},
        {"command": []},
        {"command": [""]},
        {"url": "ftp://x/mcp"},
    ):
        with pytest.raises(ValidationError):
            McpServerSettings(**bad)
