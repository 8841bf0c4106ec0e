"""The catalog: names across providers, agents' patterns, argument validation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from soma.core.service import Health, HealthStatus
from soma.tools.builtins.provider import BuiltinTools
from soma.tools.catalog import MAX_ERRORS, Catalog, CatalogError
from soma.tools.port import Tool, ToolCallContext, ToolOutcome, ToolSpec

OBJECT = {"type": "object", "properties": {}, "additionalProperties": False}


class Echo:
    def __init__(self, name: str, parameters: dict[str, Any] | None = None) -> None:
        self._spec = ToolSpec(name=name, description=name, parameters=parameters or OBJECT)

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    async def run(self, args: dict[str, Any], call: ToolCallContext) -> ToolOutcome:
        return ToolOutcome.ok(repr(args))


class Provider:
    """A provider whose tool list can change while it runs (like an MCP server's)."""

    def __init__(self, name: str, tools: Sequence[Tool], fail: bool = False) -> None:
        self._name = name
        self.current: tuple[Tool, ...] = tuple(tools)
        self.fail = fail
        self.events: list[str] = []

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        self.events.append("start")
        if self.fail:
            raise RuntimeError(f"{self._name} cannot start")

    async def stop(self) -> None:
        self.events.append("stop")

    async def health(self) -> Health:
        return Health(HealthStatus.DEGRADED, "test")

    def tools(self) -> Sequence[Tool]:
        return self.current


ADD = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "minimum": 0}},
    "required": ["a", "b"],
    "additionalProperties": False,
}


async def started(*providers: Provider | BuiltinTools) -> Catalog:
    catalog = Catalog(list(providers))
    await catalog.start()
    return catalog


async def test_patterns_select_tools_with_fnmatch_semantics() -> None:
    builtins = BuiltinTools([Echo("files"), Echo("http_fetch"), Echo("python")])
    demo = Provider("mcp:demo", [Echo("mcp_demo.add"), Echo("mcp_demo.echo")])
    other = Provider("mcp:other", [Echo("other.add")])
    catalog = await started(builtins, demo, other)

    def names(*patterns: str) -> list[str]:
        return [spec.name for spec in catalog.tools_for(patterns)]

    assert names("files") == ["files"]
    assert names("mcp_demo.*") == ["mcp_demo.add", "mcp_demo.echo"]
    assert names("*.add") == ["mcp_demo.add", "other.add"]
    assert names("*") == [
        "files",
        "http_fetch",
        "python",
        "mcp_demo.add",
        "mcp_demo.echo",
        "other.add",
    ]
    assert names("files", "fil*", "python") == ["files", "python"]
    assert names("Files", "nothing*", "") == []
    assert names() == []
    assert [spec.name for spec in catalog.specs()] == names("*")
    tool = catalog.get("mcp_demo.echo")
    assert tool is not None and tool.spec.name == "mcp_demo.echo"
    assert catalog.get("mcp_demo") is None


async def test_a_name_two_providers_offer_is_refused_at_start() -> None:
    one = Provider("a", [Echo("a.b.c")])
    two = Provider("a.b", [Echo("a.b.c")])
    catalog = Catalog([one, two])
    with pytest.raises(CatalogError, match=r"'a\.b\.c' is offered by both 'a' and 'a\.b'"):
        await catalog.start()
    # What started is stopped again: nothing is left running.
    assert one.events == ["start", "stop"] and two.events == ["start", "stop"]


async def test_a_provider_that_fails_stops_the_ones_started_before() -> None:
    one = Provider("one", [Echo("x")])
    two = Provider("two", [Echo("y")], fail=True)
    three = Provider("three", [Echo("z")])
    with pytest.raises(RuntimeError, match="two cannot start"):
        await Catalog([one, two, three]).start()
    assert one.events == ["start", "stop"]
    assert two.events == ["start"]
    assert three.events == []


async def test_duplicate_provider_names_and_invalid_schemas_are_refused() -> None:
    with pytest.raises(CatalogError):
        Catalog([Provider("p", []), Provider("p", [])])
    bad = Provider("bad", [Echo("broken", {"type": "object", "properties": {"a": {"type": 5}}})])
    with pytest.raises(CatalogError, match="broken"):
        await Catalog([bad]).start()
    not_object = Provider("arr", [Echo("arr", {"type": "array"})])
    with pytest.raises(CatalogError, match="type object"):
        await Catalog([not_object]).start()


async def test_validate_reports_schema_errors_bounded() -> None:
    catalog = await started(Provider("p", [Echo("add", ADD)]))
    assert catalog.validate("add", {"a": 1, "b": 2}) == []
    assert catalog.validate("nope", {}) == ["unknown tool 'nope'"]
    assert catalog.validate("add", ["a"]) == ["arguments must be a JSON object, not list"]
    errors = catalog.validate("add", {"a": "one", "b": -1, "c": True})
    assert "at /a: 'one' is not of type 'integer'" in errors
    assert "at /b: -1 is less than the minimum of 0" in errors
    assert any("'c' was unexpected" in error for error in errors)
    assert catalog.validate("add", {}) == [
        "at /: 'a' is a required property",
        "at /: 'b' is a required property",
    ]
    huge = catalog.validate("add", {"a": "x" * 100_000, "b": 1})
    assert len(huge) == 1 and len(huge[0]) < 400


async def test_validate_caps_the_number_of_errors() -> None:
    many = {
        "type": "object",
        "properties": {f"p{i}": {"type": "integer"} for i in range(30)},
    }
    catalog = await started(Provider("p", [Echo("many", many)]))
    errors = catalog.validate("many", {f"p{i}": "x" for i in range(30)})
    assert len(errors) == MAX_ERRORS + 1
    assert errors[-1] == f"... and {30 - MAX_ERRORS} more"


async def test_validate_uses_draft_2020_12() -> None:
    # prefixItems exists only since 2020-12; older drafts would ignore it.
    schema = {
        "type": "object",
        "properties": {"pair": {"type": "array", "prefixItems": [{"type": "string"}]}},
    }
    catalog = await started(Provider("p", [Echo("pairs", schema)]))
    assert catalog.validate("pairs", {"pair": ["ok", 1]}) == []
    assert catalog.validate("pairs", {"pair": [1]}) == ["at /pair/0: 1 is not of type 'string'"]


async def test_a_provider_whose_tools_change_is_seen_at_once() -> None:
    demo = Provider("demo", [Echo("demo.a")])
    catalog = await started(BuiltinTools([Echo("files")]), demo)
    assert catalog.get("demo.b") is None
    demo.current = (Echo("demo.a"), Echo("demo.b", ADD))
    assert [spec.name for spec in catalog.tools_for(["demo.*"])] == ["demo.a", "demo.b"]
    assert catalog.validate("demo.b", {"a": 1}) == ["at /: 'b' is a required property"]
    # A newcomer that takes an existing name stays hidden; the first owner keeps it.
    demo.current = (Echo("files"),)
    assert [spec.name for spec in catalog.specs()] == ["files"]
    tool = catalog.get("files")
    assert tool is not None and tool.spec.description == "files"


async def test_stop_and_health_cover_every_provider() -> None:
    one, two = Provider("one", []), Provider("two", [])
    catalog = await started(BuiltinTools([Echo("files")]), one, two)
    health = await catalog.health()
    assert health["builtins"].status == HealthStatus.HEALTHY
    assert health["one"].status == HealthStatus.DEGRADED
    await catalog.stop()
    assert one.events == ["start", "stop"] and two.events == ["start", "stop"]
