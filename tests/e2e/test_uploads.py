"""Uploads end to end on both stacks (issue 13): streamed to disk, content-addressed per
tenant, sniffed (415 keeps nothing), quotas, audited, and invisible to other tenants."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.e2e.stacks import Api, Stack, Upstream
from tests.e2e.test_tools import agent, call, finished, results, tool_model, tools_env

pytestmark = pytest.mark.e2e
__all__ = ["tool_model"]  # a fixture of this module too

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 64
ZIP = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\x00" * 64
LIMITS = {
    "SOMA_UPLOADS__MAX_FILES_PER_TENANT": "4",
    "SOMA_UPLOADS__MAX_FILE_BYTES": "2000",
    "SOMA_UPLOADS__MAX_BYTES_PER_TENANT": "100000",
}


def upload(api: Api, name: str, data: bytes, kind: str | None = None, **fields: str):  # type: ignore[no-untyped-def]
    files = {"file": (name, data, kind) if kind else (name, data)}
    return api.client.post("/v1/uploads", files=files, data=fields)


def stored_files(stack: Stack) -> list[Path]:
    root = stack.tmp_path / "data" / "uploads"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def other_tenant(admin: Api) -> str:
    tenant = admin.client.post("/v1/admin/tenants", json={"name": f"u-{uuid.uuid4().hex[:6]}"})
    body = {"name": "b", "scopes": ["chat"], "tenant_id": tenant.json()["id"]}
    key: str = admin.client.post("/v1/admin/keys", json=body).json()["key"]
    return key


def test_uploads_are_stored_once_served_safely_and_private(stack: Stack) -> None:
    platform = stack.launch(LIMITS)
    api = Api(platform, stack.admin_key)
    session = api.session()
    text = b"# Notes\n\nThe launch code is 4242.\n"
    first = upload(api, "notes.md", text, "text/markdown", session_id=session)
    assert first.status_code == 201, first.text
    meta = first.json()
    assert meta["content_type"] == "text/markdown"
    assert meta["size"] == len(text) and meta["session_id"] == session
    again = upload(api, "copy.md", text)
    assert again.status_code == 201
    assert again.json()["sha256"] == meta["sha256"] and again.json()["id"] != meta["id"]
    assert len(stored_files(stack)) == 1  # the same bytes, stored once

    got = api.client.get(f"/v1/uploads/{meta['id']}")
    assert got.status_code == 200 and got.json() == meta
    content = api.client.get(f"/v1/uploads/{meta['id']}/content")
    assert content.status_code == 200 and content.content == text
    assert content.headers["content-type"].startswith("text/markdown")
    assert content.headers["content-disposition"] == 'attachment; filename="notes.md"'
    assert content.headers["x-content-type-options"] == "nosniff"

    other = Api(platform, other_tenant(api))
    for path in (f"/v1/uploads/{meta['id']}", f"/v1/uploads/{meta['id']}/content"):
        assert other.client.get(path).status_code == 404
    assert other.client.delete(f"/v1/uploads/{meta['id']}").status_code == 404

    assert api.client.delete(f"/v1/uploads/{meta['id']}").status_code == 204
    assert api.client.get(f"/v1/uploads/{meta['id']}").status_code == 404
    assert len(stored_files(stack)) == 1  # still used by the copy
    assert api.client.delete(f"/v1/uploads/{again.json()['id']}").status_code == 204
    assert stored_files(stack) == []
    trail = api.client.get("/v1/admin/audit", params={"limit": "200"}).json()["items"]
    actions = [e["action"] for e in trail]
    assert actions.count("upload.create") == 2 and actions.count("upload.delete") == 2


def test_types_are_sniffed_and_quotas_enforced(stack: Stack) -> None:
    platform = stack.launch(LIMITS)
    api = Api(platform, stack.admin_key)
    refused = [
        upload(api, "fake.png", b"just some text\n", "image/png"),  # says PNG, is text
        upload(api, "pic.txt", PNG, "text/plain"),  # says text, is PNG
        upload(api, "archive.zip", ZIP),  # a type not allowed
        upload(api, "data.json", b"not json at all", "application/json"),
    ]
    for answer in refused:
        assert answer.status_code == 415, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
    unknown_field = upload(api, "note.txt", b"hi", purpose="chat")  # as unknown JSON fields
    assert unknown_field.status_code == 422, unknown_field.text
    assert "'purpose'" in unknown_field.json()["detail"]
    malformed = api.client.post(
        "/v1/uploads",
        content=b"--b0\r\n-65833--b0--\r\n",  # a part with no headers, cut short
        headers={"Content-Type": "multipart/form-data; boundary=b0"},
    )
    assert malformed.status_code == 400, malformed.text
    assert malformed.headers["content-type"] == "application/problem+json"
    no_file = api.client.post(
        "/v1/uploads",
        content=b'--b0\r\nContent-Disposition: form-data; name="session_id"\r\n\r\nx\r\n--b0--\r\n',
        headers={"Content-Type": "multipart/form-data; boundary=b0"},
    )
    assert no_file.status_code == 422 and "'file'" in no_file.json()["detail"], no_file.text
    session = api.client.post("/v1/sessions", json={}).json()["id"]
    part = b'--b0\r\nContent-Disposition: form-data; name="session_id"\r\n\r\n%s\r\n'
    twice = api.client.post(
        "/v1/uploads",
        content=part % session.encode() * 2
        + b'--b0\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
        + b"hi\r\n--b0--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=b0"},
    )
    assert twice.status_code == 422 and "came twice" in twice.json()["detail"], twice.text
    assert stored_files(stack) == []
    image = upload(api, "pic.png", PNG)
    assert image.status_code == 201 and image.json()["content_type"] == "image/png"
    assert upload(api, "big.txt", b"x" * 2001).status_code == 413
    assert upload(api, "missing.txt", b"hi", session_id="nope").status_code == 404
    for index in range(3):
        assert upload(api, f"n{index}.txt", f"note {index}".encode()).status_code == 201
    full = upload(api, "n9.txt", b"one too many")
    assert full.status_code == 409, full.text
    assert len(stored_files(stack)) == 4
    assert not list((stack.tmp_path / "data" / "uploads").rglob(".incoming/*"))


def pdf_with(text: str) -> bytes:
    """A one-page PDF whose page shows `text` (Helvetica), built by hand."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def test_attachments_reach_the_prompt(stack: Stack) -> None:
    platform = stack.launch()
    api = Api(platform, stack.admin_key)
    session = api.session()
    report = upload(api, "report.pdf", pdf_with("Quarterly revenue was 1234 zorkmids"))
    assert report.status_code == 201, report.text
    assert report.json()["content_type"] == "application/pdf"
    table = upload(api, "table.csv", b"city,people\nOslo,700000\n")
    image = upload(api, "pic.png", PNG)
    ids = [report.json()["id"], table.json()["id"], image.json()["id"]]
    body = {"content": "Summarise these.", "attachments": ids}
    answer = api.client.post(f"/v1/sessions/{session}/messages", json=body, params={"wait": "true"})
    assert answer.status_code == 200, answer.text
    # The scripted model echoes the message it was given: what the model saw.
    seen = answer.json()["message"]["content"]
    assert "Summarise these." in seen
    assert "Quarterly revenue was 1234 zorkmids" in seen
    assert "Oslo,700000" in seen
    assert f"pic.png (image/png, {len(PNG)} bytes" in seen
    stored = api.messages(session)[0]
    assert stored["content"] == "Summarise these."  # the message itself is not rewritten
    unknown = {"content": "and this?", "attachments": ["nope"]}
    assert api.client.post(f"/v1/sessions/{session}/messages", json=unknown).status_code == 422


def test_the_read_upload_tool_reads_pages_of_the_tenants_own_uploads(
    stack: Stack, tool_model: Upstream
) -> None:
    platform = stack.launch(tools_env(tool_model))
    api = Api(platform, stack.admin_key)
    mine = upload(api, "long.txt", ("0123456789" * 50).encode()).json()["id"]
    theirs = upload(Api(platform, other_tenant(api)), "secret.txt", b"not yours").json()["id"]
    session = api.session(agent(api, "reader", ["read_upload"]))
    content = call(
        ("read_upload", {"upload_id": mine, "offset": 495, "max_chars": 5}),
        ("read_upload", {"upload_id": mine, "max_chars": 12}),
        ("read_upload", {"upload_id": theirs}),
    )
    run = api.send(session, content).json()["run_id"]
    assert finished(api, run)["status"] == "completed"
    outputs = [r["output"] for r in results(api, run)]
    assert outputs[0] == "56789\n[end of file]"
    assert outputs[1] == "012345678901\n[more: continue with offset 12]"
    assert outputs[2] == f"no upload {theirs!r}"
