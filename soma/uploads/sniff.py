"""What an upload really is: its type sniffed from its first bytes (magic numbers).

Binary formats are told by their signatures (puremagic). Bytes that are UTF-8 text without
NULs are one of the text types; which one (plain, Markdown, CSV, JSON) follows the client's
declared type or the file name, since no signature tells them apart (JSON must look like it).
"""

from __future__ import annotations

import puremagic

SNIFF_BYTES = 8192
TEXT_TYPES = ("text/plain", "text/markdown", "text/csv", "application/json")
_BY_EXTENSION = {".md": "text/markdown", ".markdown": "text/markdown", ".csv": "text/csv",
                 ".json": "application/json", ".txt": "text/plain"}  # fmt: skip
_MIN_CONFIDENCE = 0.3
_GENERIC = ("", "application/octet-stream")


class TypeRefused(Exception):
    """415: the bytes are not what the client said, or not an allowed type."""


def _is_text(head: bytes) -> bool:
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The head may end inside a character: only an error before its last 3 bytes counts.
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def _text_type(head: bytes, declared: str, filename: str) -> str:
    wanted = declared if declared in TEXT_TYPES else None
    if wanted is None:
        dot = filename.rfind(".")
        wanted = _BY_EXTENSION.get(filename[dot:].lower(), "text/plain") if dot >= 0 else (
            "text/plain"
        )  # fmt: skip
    if wanted == "application/json" and head.lstrip()[:1] not in (b"{", b"["):
        raise TypeRefused("the file is declared as JSON but does not start like JSON")
    return wanted


def _signatures(head: bytes) -> list[str]:
    """Types whose magic numbers `head` has, likeliest first."""
    if not head:
        return []
    try:
        found = puremagic.magic_string(head)
    except (puremagic.PureError, ValueError):
        return []
    return [m.mime_type for m in found if m.confidence >= _MIN_CONFIDENCE and m.mime_type]


def sniff(head: bytes, declared: str, filename: str, allowed: frozenset[str]) -> str:
    """The upload's content type; TypeRefused on a mismatch with `declared` or a type not in
    `allowed`."""
    declared = declared.split(";", 1)[0].strip().lower()
    signatures = _signatures(head)
    # A PDF may be all ASCII: a known binary format wins over "it decodes as text".
    binary = [t for t in signatures if t in allowed and t not in TEXT_TYPES]
    if _is_text(head) and not binary:
        sniffed = _text_type(head, declared, filename)
        textual = declared.startswith("text/") or declared in TEXT_TYPES
        if declared not in _GENERIC and not textual:
            raise TypeRefused(f"the file is text, not {declared}")
    else:
        if not signatures:
            raise TypeRefused("the file's type cannot be recognised from its content")
        if declared not in _GENERIC and declared not in signatures:
            raise TypeRefused(f"the file's content is {signatures[0]}, not {declared}")
        sniffed = declared if declared in signatures else (binary or signatures)[0]
    if sniffed not in allowed:
        raise TypeRefused(f"files of type {sniffed} are not accepted")
    return sniffed
