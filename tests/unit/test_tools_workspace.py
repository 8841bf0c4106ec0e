"""Session workspaces: one private directory per session, and no path that leaves it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from soma.tools.workspace import WorkspaceError, Workspaces


@pytest.fixture
def spaces(tmp_path: Path) -> Workspaces:
    return Workspaces(tmp_path / "workspaces", quota_bytes=10_000)


def test_for_session_creates_a_private_directory_per_tenant_and_session(
    spaces: Workspaces,
) -> None:
    one = spaces.for_session("tenant-a", "s1")
    other = spaces.for_session("tenant-b", "s1")
    assert one == spaces.root / "tenant-a" / "s1"
    assert other == spaces.root / "tenant-b" / "s1"
    assert one.is_dir() and other.is_dir()
    assert stat.S_IMODE(os.stat(one).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(spaces.root / "tenant-a").st_mode) == 0o700
    # Asking again returns the same directory, contents intact.
    (one / "keep.txt").write_text("x")
    assert spaces.for_session("tenant-a", "s1") == one
    assert (one / "keep.txt").read_text() == "x"


@pytest.mark.parametrize(
    "bad", ["..", ".", "", "a/b", "a/../b", "/etc", "a\x00b", "x" * 200, ".hidden", "é"]
)
def test_ids_that_could_form_a_path_are_refused(spaces: Workspaces, bad: str) -> None:
    with pytest.raises(WorkspaceError):
        spaces.for_session(bad, "s1")
    with pytest.raises(WorkspaceError):
        spaces.for_session("t1", bad)
    assert not spaces.root.exists() or not any(spaces.root.iterdir())


def test_resolve_stays_inside(spaces: Workspaces) -> None:
    ws = spaces.for_session("t1", "s1")
    assert spaces.resolve(ws, "notes/a.txt") == ws / "notes" / "a.txt"
    assert spaces.resolve(ws, "./notes//a.txt") == ws / "notes" / "a.txt"
    assert spaces.resolve(ws, ".") == ws
    assert spaces.resolve(ws, "") == ws


@pytest.mark.parametrize(
    "path",
    ["..", "../t2/s1/x", "a/../../x", "a/..", "/etc/passwd", "/", "a\x00"],
)
def test_resolve_refuses_parent_and_absolute_paths(spaces: Workspaces, path: str) -> None:
    ws = spaces.for_session("t1", "s1")
    with pytest.raises(WorkspaceError):
        spaces.resolve(ws, path)


def test_resolve_refuses_a_symlink_out(spaces: Workspaces, tmp_path: Path) -> None:
    ws = spaces.for_session("t1", "s1")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    (ws / "link").symlink_to(outside / "secret")
    (ws / "abs").symlink_to("/etc/passwd")
    (ws / "rel").symlink_to("../../../outside/secret")
    for name in ("link", "abs", "rel"):
        with pytest.raises(WorkspaceError, match="outside the workspace"):
            spaces.resolve(ws, name)


def test_resolve_refuses_a_symlinked_parent(spaces: Workspaces, tmp_path: Path) -> None:
    ws = spaces.for_session("t1", "s1")
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws / "dir").symlink_to(outside, target_is_directory=True)
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        spaces.resolve(ws, "dir/new-file")
    # A link into another tenant's workspace is just as much outside.
    theirs = spaces.for_session("t2", "s9")
    (ws / "peek").symlink_to(theirs, target_is_directory=True)
    with pytest.raises(WorkspaceError):
        spaces.resolve(ws, "peek/anything")


def test_a_symlink_that_stays_inside_is_followed(spaces: Workspaces) -> None:
    ws = spaces.for_session("t1", "s1")
    (ws / "real").mkdir()
    (ws / "alias").symlink_to("real", target_is_directory=True)
    assert spaces.resolve(ws, "alias/f.txt") == ws / "real" / "f.txt"


def test_resolve_only_accepts_a_session_workspace(spaces: Workspaces, tmp_path: Path) -> None:
    spaces.for_session("t1", "s1")
    with pytest.raises(WorkspaceError):
        spaces.resolve(spaces.root / "t1", "s1/x")
    with pytest.raises(WorkspaceError):
        spaces.resolve(tmp_path, "x")


def test_usage_counts_regular_files_without_following_links(
    spaces: Workspaces, tmp_path: Path
) -> None:
    ws = spaces.for_session("t1", "s1")
    assert spaces.usage(ws) == 0
    (ws / "a.txt").write_bytes(b"x" * 100)
    (ws / "sub").mkdir()
    (ws / "sub" / "b.bin").write_bytes(b"y" * 250)
    big = tmp_path / "big"
    big.write_bytes(b"z" * 5000)
    (ws / "link").symlink_to(big)
    assert spaces.usage(ws) == 350


def test_discard_removes_the_workspace_but_not_what_links_point_to(
    spaces: Workspaces, tmp_path: Path
) -> None:
    ws = spaces.for_session("t1", "s1")
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "k.txt").write_text("k")
    (ws / "out").symlink_to(keep, target_is_directory=True)
    (ws / "f").write_text("f")
    spaces.discard("t1", "s1")
    assert not ws.exists()
    assert (keep / "k.txt").read_text() == "k"
    spaces.discard("t1", "s1")  # already gone: nothing to do
