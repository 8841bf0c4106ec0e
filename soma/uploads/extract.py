"""Text of an uploaded file for a model: text types as they are, PDFs through pypdf."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pypdf import PdfReader
from pypdf.errors import PdfReadError

from soma.uploads.sniff import TEXT_TYPES

_log = logging.getLogger("soma.uploads")
PDF = "application/pdf"
EXTRACTABLE = frozenset({*TEXT_TYPES, PDF})


def _text_file(path: Path, max_chars: int) -> str:
    with path.open("rb") as file:
        # UTF-8 takes at most 4 bytes a character: this many bytes hold max_chars characters.
        return file.read(max_chars * 4).decode("utf-8", "replace")[:max_chars]


def _pdf(path: Path, max_chars: int) -> str:
    parts: list[str] = []
    size = 0
    for page in PdfReader(path).pages:
        text = page.extract_text() or ""
        parts.append(text)
        size += len(text)
        if size >= max_chars:
            break
    return "\n".join(parts)[:max_chars]


async def extract_text(path: Path, content_type: str, max_chars: int) -> str | None:
    """Up to `max_chars` of the file's text; None for a type without text or an unreadable
    file (the model then gets its description only)."""
    if content_type not in EXTRACTABLE or max_chars <= 0:
        return None
    read = _pdf if content_type == PDF else _text_file
    try:
        return await asyncio.to_thread(read, path, max_chars)
    except (OSError, PdfReadError, ValueError) as exc:
        _log.warning("could not read the text of %s: %s", path.name, exc)
        return None
