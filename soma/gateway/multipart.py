"""A `multipart/form-data` body read as it arrives: the one file part goes straight to an
`Incoming` file (bounded memory, however large), the small text fields are kept."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from python_multipart.exceptions import ParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from soma.gateway.problems import bad_request, unprocessable
from soma.uploads.files import Incoming
from soma.uploads.sniff import SNIFF_BYTES

MAX_FIELD_BYTES = 1024


@dataclass
class Received:
    fields: dict[str, str] = field(default_factory=dict)
    file_field: str | None = None
    filename: str = ""
    declared: str = ""


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)


def boundary_of(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise bad_request("the body must be multipart/form-data with a boundary")
    return boundary


async def receive(
    request: Request, incoming: Incoming, fields: frozenset[str], file_field: str = "file"
) -> Received:
    """Stream the body; the part named `file_field` (a file) is written to `incoming`.

    Any other part must be one of `fields`: an unknown one is refused, as in a JSON body."""
    received = Received()
    part = _Part()
    field_name = b""
    field_value = b""
    pending = bytearray()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        nonlocal field_name
        field_name += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        nonlocal field_value
        field_value += data[start:end]

    def on_header_end() -> None:
        nonlocal field_name, field_value
        part.headers[field_name.lower()] = field_value
        field_name, field_value = b"", b""

    def on_headers_finished() -> None:
        _, options = parse_options_header(part.headers.get(b"content-disposition", b""))
        part.name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        part.filename = None if filename is None else filename.decode("utf-8", "replace")
        if part.name == file_field:
            if received.file_field is not None:
                raise unprocessable(f"one file per upload: {file_field!r} came twice")
            received.file_field = part.name
            received.filename = (part.filename or "upload")[-255:]
            received.declared = part.headers.get(b"content-type", b"").decode("latin-1")
        elif part.name not in fields:
            raise unprocessable(f"unknown field {part.name!r} (the form has {sorted(fields)})")
        elif part.name in received.fields:
            # Which of two values would be meant is a guess: refuse, as for the file.
            raise unprocessable(f"the field {part.name!r} came twice")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.name == file_field:
            pending.extend(data[start:end])
            return
        part.data.extend(data[start:end])
        if len(part.data) > MAX_FIELD_BYTES:
            raise unprocessable(f"the field {part.name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end() -> None:
        nonlocal part
        if part.name != file_field and part.name:
            received.fields[part.name] = part.data.decode("utf-8", "replace")
        part = _Part()

    callbacks: Any = {
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    parser = MultipartParser(boundary_of(request.headers.get("content-type", "")), callbacks)
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if pending:
                await incoming.write(bytes(pending), SNIFF_BYTES)
                pending.clear()
        parser.finalize()
    except ParseError as exc:
        raise bad_request(f"the multipart body is malformed: {exc}") from None
    if received.file_field is None:
        raise unprocessable(f"the multipart body has no {file_field!r} part")
    return received
