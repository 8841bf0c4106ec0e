"""API key format, hashing and the bootstrap key file."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from soma.gateway.auth.key_file import write_key_file
from soma.gateway.auth.keys import (
    PREFIX_LENGTH,
    generate_key,
    hash_key,
    key_matches,
    normalize_scopes,
    parse_prefix,
)


def test_generated_key_has_the_documented_format() -> None:
    new = generate_key()
    mark, rest = new.plaintext[:5], new.plaintext[5:]
    assert mark == "soma_"
    assert rest[:PREFIX_LENGTH] == new.prefix
    assert rest[PREFIX_LENGTH] == "_"
    secret = rest[PREFIX_LENGTH + 1 :]
    assert len(secret) >= 43  # 32 random bytes, url-safe base64
    assert new.prefix.isalnum() and len(new.prefix) == 12


def test_keys_and_prefixes_are_unique() -> None:
    keys = [generate_key() for _ in range(500)]
    assert len({k.prefix for k in keys}) == 500
    assert len({k.plaintext for k in keys}) == 500


def test_only_a_sha256_hash_of_the_key_is_kept() -> None:
    new = generate_key()
    assert new.secret_hash == hashlib.sha256(new.plaintext.encode()).hexdigest()
    assert new.plaintext not in new.secret_hash
    assert hash_key(new.plaintext) == new.secret_hash


def test_key_matches_only_its_own_hash() -> None:
    first, second = generate_key(), generate_key()
    assert key_matches(first.plaintext, first.secret_hash)
    assert not key_matches(second.plaintext, first.secret_hash)
    assert not key_matches(first.plaintext[:-1] + "x", first.secret_hash)


def test_parse_prefix_reads_well_formed_keys_only() -> None:
    new = generate_key()
    assert parse_prefix(new.plaintext) == new.prefix
    malformed = [
        "",
        "Bearer",
        new.plaintext[5:],
        "sk_" + new.plaintext[3:],
        new.plaintext[:17] + "-" + new.plaintext[18:],  # wrong separator
        new.plaintext[:20],  # secret too short
        new.plaintext + "é",  # not url-safe
        "soma_" + "a" * 11 + "!_" + "b" * 43,  # prefix outside the alphabet
    ]
    assert [parse_prefix(candidate) for candidate in malformed] == [None] * len(malformed)


def test_secret_may_contain_underscores_and_dashes() -> None:
    key = "soma_ABCDEFGHijkl_" + "_-" * 22
    assert parse_prefix(key) == "ABCDEFGHijkl"


def test_normalize_scopes_rejects_unknown_and_deduplicates() -> None:
    assert normalize_scopes(["chat", "admin", "chat"]) == ["admin", "chat"]
    with pytest.raises(ValueError, match="root"):
        normalize_scopes(["chat", "root"])


def test_key_file_is_one_line_mode_0600_in_a_new_directory(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "admin.key"
    previous = os.umask(0)  # the most permissive umask: the mode must not come from it
    try:
        write_key_file(path, "soma_k")
    finally:
        os.umask(previous)
    assert path.read_text() == "soma_k\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["admin.key"]  # no temp file left


def test_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "admin.key"
    write_key_file(path, "first")
    with pytest.raises(FileExistsError):
        write_key_file(path, "second")
    assert path.read_text() == "first\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["admin.key"]
