"""The `read_upload` built-in: the text of one of the tenant's uploads, a page at a time."""

from __future__ import annotations

from typing import Any

from soma.storage.database import Database
from soma.tools.port import ToolCallContext, ToolOutcome, ToolSpec
from soma.uploads.attach import describe
from soma.uploads.extract import extract_text
from soma.uploads.files import UploadFiles

MAX_CHARS = 20_000
SPEC = ToolSpec(
    name="read_upload",
    description=(
        "Read the text of an uploaded file (text, Markdown, CSV, JSON or PDF) by its id, "
        "a page at a time: pass `offset` to continue where the previous page ended. "
        "Other files are described by name, type and size."
    ),
    parameters={
        "type": "object",
        "properties": {
            "upload_id": {"type": "string", "minLength": 1, "maxLength": 64},
            "offset": {"type": "integer", "minimum": 0, "description": "characters to skip"},
            "max_chars": {"type": "integer", "minimum": 1, "maximum": MAX_CHARS},
        },
        "required": ["upload_id"],
        "additionalProperties": False,
    },
    idempotent=True,
)


class ReadUploadTool:
    def __init__(self, database: Database, files: UploadFiles) -> None:
        self._database = database
        self._files = files

    @property
    def spec(self) -> ToolSpec:
        return SPEC

    async def run(self, args: dict[str, Any], call: ToolCallContext) -> ToolOutcome:
        upload_id = str(args.get("upload_id", ""))
        offset = int(args.get("offset", 0))
        size = int(args.get("max_chars", MAX_CHARS))
        async with self._database.read() as uow:
            upload = await uow.uploads.get(call.tenant_id, upload_id)
        if upload is None:
            return ToolOutcome.error(f"no upload {upload_id!r}", upload_id=upload_id)
        path = self._files.path(call.tenant_id, upload.sha256)
        text = await extract_text(path, upload.content_type, offset + size + 1)
        if text is None:
            return ToolOutcome.ok(f"[{describe(upload)}: no text to read]", upload_id=upload_id)
        page = text[offset : offset + size]
        more = len(text) > offset + size
        note = f"\n[more: continue with offset {offset + size}]" if more else "\n[end of file]"
        return ToolOutcome.ok(page + note, upload_id=upload_id, offset=offset, chars=len(page))
