"""The `files` built-in: text in the session workspace, nothing outside it, quota kept."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from soma.tools.builtins.files import FilesLimits, FilesTool
from soma.tools.catalog import check_schema
from soma.tools.port import ToolCallContext, ToolOutcome
from soma.tools.workspace import Workspaces


@pytest.fixture
def spaces(tmp_path: Path) -> Workspaces:
    return Workspaces(tmp_path / "workspaces", quota_bytes=1_000)


@pytest.fixture
def tool(spaces: Workspaces) -> FilesTool:
    return FilesTool(spaces, FilesLimits(max_read_bytes=200, max_write_bytes=600, max_entries=5))


def context(spaces: Workspaces, tenant: str = "t1", session: str = "s1") -> ToolCallContext:
    return ToolCallContext(
        tenant_id=tenant,
        agent_id="a1",
        session_id=session,
        run_id="r1",
        call_id="c1",
        workspace=spaces.for_session(tenant, session),
        timeout_s=10,
    )


async def call(tool: FilesTool, ctx: ToolCallContext, **args: Any) -> ToolOutcome:
    return await tool.run(args, ctx)


def test_the_spec_is_a_valid_object_schema(tool: FilesTool) -> None:
    check_schema(tool.spec)
    assert tool.spec.name == "files"
    assert tool.spec.idempotent is True


async def test_write_read_list_delete(tool: FilesTool, spaces: Workspaces) -> None:
    ctx = context(spaces)
    wrote = await call(tool, ctx, op="write", path="notes/todo.md", content="- milk\n- eggs")
    assert wrote.status == "ok", wrote.output
    assert (ctx.workspace / "notes" / "todo.md").read_text() == "- milk\n- eggs"

    read = await call(tool, ctx, op="read", path="notes/todo.md")
    assert read.status == "ok"
    assert read.output == "- milk\n- eggs"
    assert read.detail["bytes"] == 13

    await call(tool, ctx, op="write", path="a.txt", content="aaa")
    listed = await call(tool, ctx, op="list", path=".")
    assert listed.status == "ok"
    assert listed.output.splitlines() == ["a.txt  (3 bytes)", "notes/"]
    deep = await call(tool, ctx, op="list", path=".", recursive=True)
    assert deep.output.splitlines() == ["a.txt  (3 bytes)", "notes/", "notes/todo.md  (13 bytes)"]

    # write replaces the whole file.
    await call(tool, ctx, op="write", path="a.txt", content="b")
    assert (await call(tool, ctx, op="read", path="a.txt")).output == "b"

    gone = await call(tool, ctx, op="delete", path="a.txt")
    assert gone.status == "ok" and gone.detail["existed"] is True
    assert not (ctx.workspace / "a.txt").exists()
    again = await call(tool, ctx, op="delete", path="a.txt")
    assert again.status == "ok" and again.detail["existed"] is False


async def test_folder_delete_needs_recursive(tool: FilesTool, spaces: Workspaces) -> None:
    ctx = context(spaces)
    await call(tool, ctx, op="write", path="d/e/f.txt", content="x")
    refused = await call(tool, ctx, op="delete", path="d")
    assert refused.status == "error"
    assert "recursive" in refused.output
    assert (ctx.workspace / "d" / "e" / "f.txt").exists()
    done = await call(tool, ctx, op="delete", path="d", recursive=True)
    assert done.status == "ok"
    assert not (ctx.workspace / "d").exists()
    assert (await call(tool, ctx, op="delete", path=".")).status == "error"
    assert ctx.workspace.is_dir()


async def test_errors_are_clear_and_name_no_host_path(tool: FilesTool, spaces: Workspaces) -> None:
    ctx = context(spaces)
    missing = await call(tool, ctx, op="read", path="nope.txt")
    assert missing.status == "error"
    assert missing.output == "nope.txt: no such file or folder"
    (ctx.workspace / "dir").mkdir()
    assert "folder" in (await call(tool, ctx, op="read", path="dir")).output
    assert (await call(tool, ctx, op="write", path="dir", content="x")).status == "error"
    assert (await call(tool, ctx, op="write", path="x.txt")).status == "error"
    (ctx.workspace / "bin").write_bytes(b"\x00\x01\x02")
    binary = await call(tool, ctx, op="read", path="bin")
    assert binary.status == "error" and "binary" in binary.output
    assert (await call(tool, ctx, op="chmod", path="x")).status == "error"
    for outcome in (missing, binary):
        assert str(spaces.root) not in outcome.output


async def test_size_caps(tool: FilesTool, spaces: Workspaces) -> None:
    ctx = context(spaces)
    too_big = await call(tool, ctx, op="write", path="big.txt", content="x" * 601)
    assert too_big.status == "error"
    assert "at most 600" in too_big.output
    assert not (ctx.workspace / "big.txt").exists()
    (ctx.workspace / "long.txt").write_text("y" * 500)
    read = await call(tool, ctx, op="read", path="long.txt")
    assert read.status == "ok"
    assert read.output.startswith("y" * 200 + "\n[... truncated")
    assert read.detail["truncated"] is True
    for i in range(7):
        (ctx.workspace / f"f{i}").write_text("z")
    listed = await call(tool, ctx, op="list", path=".")
    assert listed.detail["entries"] == 5
    assert listed.detail["complete"] is False


async def test_quota_is_respected_on_write(tool: FilesTool, spaces: Workspaces) -> None:
    ctx = context(spaces)
    assert (await call(tool, ctx, op="write", path="a", content="a" * 500)).status == "ok"
    assert (await call(tool, ctx, op="write", path="b", content="b" * 400)).status == "ok"
    over = await call(tool, ctx, op="write", path="c", content="c" * 200)
    assert over.status == "error"
    assert "quota" in over.output
    assert not (ctx.workspace / "c").exists()
    # Replacing a file counts its new size, not both.
    assert (await call(tool, ctx, op="write", path="a", content="a" * 600)).status == "ok"
    assert spaces.usage(ctx.workspace) == 1_000
    # Another session has its own quota.
    other = context(spaces, session="s2")
    assert (await call(tool, other, op="write", path="c", content="c" * 200)).status == "ok"


@pytest.mark.parametrize("path", ["../s2/x", "/etc/passwd", "a/../../x", "..", "/"])
async def test_paths_out_of_the_workspace_are_refused(
    tool: FilesTool, spaces: Workspaces, path: str
) -> None:
    ctx = context(spaces)
    neighbour = spaces.for_session("t1", "s2")
    for op, extra in (("read", {}), ("write", {"content": "x"}), ("list", {}), ("delete", {})):
        outcome = await call(tool, ctx, op=op, path=path, **extra)
        assert outcome.status == "error", (op, path, outcome.output)
    assert list(neighbour.iterdir()) == []


async def test_symlinks_out_are_refused(
    tool: FilesTool, spaces: Workspaces, tmp_path: Path
) -> None:
    ctx = context(spaces)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top-secret-content")
    (ctx.workspace / "s").symlink_to(outside / "secret.txt")
    (ctx.workspace / "d").symlink_to(outside, target_is_directory=True)
    (ctx.workspace / "shadow").symlink_to("/etc/shadow")
    theirs = spaces.for_session("t2", "s1")
    (theirs / "private.txt").write_text("tenant two")
    (ctx.workspace / "t2").symlink_to(theirs, target_is_directory=True)

    for path in ("s", "d/secret.txt", "shadow", "t2/private.txt"):
        read = await call(tool, ctx, op="read", path=path)
        assert read.status == "error", path
        assert "top-secret" not in read.output and "tenant two" not in read.output
    assert (await call(tool, ctx, op="write", path="d/new.txt", content="x")).status == "error"
    assert (await call(tool, ctx, op="write", path="s", content="x")).status == "error"
    assert (await call(tool, ctx, op="delete", path="d/secret.txt")).status == "error"
    assert (await call(tool, ctx, op="list", path="d")).status == "error"
    assert (outside / "secret.txt").read_text() == "top-secret-content"
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    assert (theirs / "private.txt").read_text() == "tenant two"
    # Deleting the link itself is fine: it removes the link, not what it points to.
    (ctx.workspace / "inside").write_text("i")
    (ctx.workspace / "alias").symlink_to("inside")
    assert (await call(tool, ctx, op="read", path="alias")).output == "i"


async def test_a_folder_swapped_for_a_link_after_resolution_is_not_followed(
    tool: FilesTool, spaces: Workspaces, tmp_path: Path
) -> None:
    ctx = context(spaces)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.txt").write_text("outside")
    (ctx.workspace / "sub").mkdir()
    target = tool._target(ctx.workspace, "sub/f.txt")
    # Sandboxed code races the check: the folder becomes a link to outside.
    (ctx.workspace / "sub").rmdir()
    (ctx.workspace / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OSError):
        tool._read(target, "sub/f.txt")
    with pytest.raises(OSError):
        tool._write(target, "sub/f.txt", "overwritten")
    assert (outside / "f.txt").read_text() == "outside"
