"""API key format, generation and hashing: `soma_<prefix>_<secret>`, stored only as a hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from enum import StrEnum

KEY_MARK = "soma_"
PREFIX_LENGTH = 12
SECRET_BYTES = 32
_PREFIX_ALPHABET = string.ascii_letters + string.digits
# The prefix alphabet has no "_" or "-", so the separator after it is unambiguous; the secret
# (token_urlsafe) may contain both, which is why parsing goes by position, not by splitting.
_SECRET_MIN_CHARS = 43  # token_urlsafe(32) without padding
_SECRET_MAX_CHARS = 256
_SECRET_CHARS = frozenset(string.ascii_letters + string.digits + "-_")


class Scope(StrEnum):
    CHAT = "chat"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly generated key: `plaintext` is shown once and never stored."""

    prefix: str
    plaintext: str
    secret_hash: str


def generate_key() -> NewKey:
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    plaintext = f"{KEY_MARK}{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    return NewKey(prefix=prefix, plaintext=plaintext, secret_hash=hash_key(plaintext))


def hash_key(plaintext: str) -> str:
    # A fast, unsalted hash is enough here: the secret holds 256 random bits, so neither
    # brute force nor precomputed tables apply; slow password hashes guard low-entropy input.
    return hashlib.sha256(plaintext.encode()).hexdigest()


def key_matches(plaintext: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_key(plaintext), secret_hash)


def parse_prefix(candidate: str) -> str | None:
    """The lookup prefix of a well-formed key, or None when it cannot be one of ours."""
    head = len(KEY_MARK) + PREFIX_LENGTH
    if not candidate.startswith(KEY_MARK) or len(candidate) <= head + 1:
        return None
    prefix, separator, secret = (
        candidate[len(KEY_MARK) : head],
        candidate[head],
        candidate[head + 1 :],
    )
    if separator != "_" or any(ch not in _PREFIX_ALPHABET for ch in prefix):
        return None
    if not _SECRET_MIN_CHARS <= len(secret) <= _SECRET_MAX_CHARS:
        return None
    if any(ch not in _SECRET_CHARS for ch in secret):
        return None
    return prefix


def normalize_scopes(scopes: list[str] | tuple[str, ...] | frozenset[str]) -> list[str]:
    """Known scopes, deduplicated, in a stable order; raises ValueError on an unknown one."""
    known = {scope.value for scope in Scope}
    unknown = sorted(set(scopes) - known)
    if unknown:
        raise ValueError(f"unknown scope(s) {unknown}; known: {sorted(known)}")
    return sorted(set(scopes))
