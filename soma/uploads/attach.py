"""Attachments in a turn's context: the message being answered carries the text of its
attachments (within a token budget); others are described by name, type and size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from soma.storage.database import Database
from soma.storage.repositories import Upload
from soma.storage.repositories.messages import Message
from soma.uploads.extract import extract_text
from soma.uploads.files import UploadFiles

CHARS_PER_TOKEN = 4


def describe(upload: Upload) -> str:
    return f"{upload.filename} ({upload.content_type}, {upload.size} bytes, id {upload.id})"


class AttachmentReader:
    def __init__(self, database: Database, files: UploadFiles, budget_tokens: int) -> None:
        self._database = database
        self._files = files
        self._budget_chars = budget_tokens * CHARS_PER_TOKEN

    async def expand(self, tenant_id: str, history: Sequence[Message]) -> list[Message]:
        """`history` with attachments added to the content of the messages that have them."""
        expanded = list(history)
        last_user = max((i for i, m in enumerate(expanded) if m.role == "user"), default=None)
        for index, message in enumerate(expanded):
            ids = message.metadata.get("attachments") if message.role == "user" else None
            if not ids or not isinstance(ids, list):
                continue
            parts = await self._parts(tenant_id, [str(i) for i in ids], index == last_user)
            if parts:
                expanded[index] = replace(message, content="\n\n".join([message.content, *parts]))
        return expanded

    async def _parts(self, tenant_id: str, ids: list[str], with_text: bool) -> list[str]:
        async with self._database.read() as uow:
            found = [await uow.uploads.get(tenant_id, upload_id) for upload_id in ids]
        parts, left = [], self._budget_chars
        for upload_id, upload in zip(ids, found, strict=True):
            if upload is None:
                parts.append(f"[Attachment {upload_id}: deleted]")
                continue
            text = None
            if with_text and left > 0:
                path = self._files.path(tenant_id, upload.sha256)
                text = await extract_text(path, upload.content_type, left)
            if text is None:
                parts.append(f"[Attachment {describe(upload)}]")
                continue
            left -= len(text)
            cut = " (cut to fit)" if left <= 0 else ""
            parts.append(f"[Attachment {describe(upload)}{cut}]\n{text}")
        return parts
