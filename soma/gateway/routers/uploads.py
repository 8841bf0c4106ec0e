"""`/v1/uploads`: files a tenant's messages may attach (ARCHITECTURE §9).

The bytes stream to disk as they arrive, are sniffed (415 for a type that is not allowed or
not what the client said: nothing is kept), count against the tenant's quota, and are stored
once per tenant however often they are uploaded. Creation is a policy decision
(`upload.create`); creating and deleting are audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse

from soma.config.governance import UploadsSettings
from soma.core.ids import new_id
from soma.gateway.auth.deps import ChatCaller
from soma.gateway.json_route import JsonRoute
from soma.gateway.multipart import receive
from soma.gateway.problems import conflict, not_found, problem_responses, unprocessable
from soma.gateway.schemas.common import ResponseBody
from soma.policy.port import Decision, PolicyInput, Subject
from soma.storage.audit_chain import AuditRecord
from soma.storage.database import Database
from soma.storage.repositories import Upload
from soma.uploads.files import TooLarge, UploadFiles
from soma.uploads.sniff import TypeRefused, sniff

UPLOADS_PATH = "/v1/uploads"
FORM_FIELDS = frozenset({"session_id"})
"""The form's parts besides `file`."""
_MULTIPART_OVERHEAD = 64 * 1024


def upload_body_limit(settings: UploadsSettings) -> int:
    """The largest body `POST /v1/uploads` may have (the file and its multipart framing)."""
    return settings.max_file_bytes + _MULTIPART_OVERHEAD


class PolicyDecider(Protocol):
    async def decide(self, input: PolicyInput) -> Decision: ...


@dataclass(frozen=True, slots=True)
class UploadsContext:
    database: Database
    files: UploadFiles
    policy: PolicyDecider
    settings: UploadsSettings


class UploadOut(ResponseBody):
    id: str
    filename: str
    content_type: str
    size: int
    sha256: str
    session_id: str | None
    created_at: datetime

    @classmethod
    def of(cls, upload: Upload) -> UploadOut:
        return cls(
            id=upload.id,
            filename=upload.filename,
            content_type=upload.content_type,
            size=upload.size,
            sha256=upload.sha256,
            session_id=upload.session_id,
            created_at=upload.created_at,
        )


def uploads_router(ctx: UploadsContext) -> APIRouter:
    router = APIRouter(prefix=UPLOADS_PATH, tags=["uploads"], route_class=JsonRoute)
    limits = ctx.settings
    allowed = frozenset(limits.allowed_types)

    async def quota_left(tenant_id: str) -> int:
        """Bytes the next file may have; 409/413 when the tenant's quota is used up."""
        async with ctx.database.read() as uow:
            count, used = await uow.uploads.usage(tenant_id)
        return _left(limits, count, used)

    @router.post(
        "",
        status_code=201,
        response_model=UploadOut,
        responses=problem_responses([404, 409, 413, 415]),
        openapi_extra={
            "requestBody": {
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "file": {"type": "string", "format": "binary"},
                                "session_id": {"type": "string"},
                            },
                            "required": ["file"],
                            "additionalProperties": False,
                        }
                    }
                },
                "required": True,
            }
        },
    )
    async def create_upload(request: Request, caller: ChatCaller) -> UploadOut:
        tenant_id = caller.tenant_id
        decision = await ctx.policy.decide(
            PolicyInput(
                action="upload.create",
                tenant=tenant_id,
                subject=Subject(caller.key_id, tuple(sorted(caller.scopes))),
                resource={"tenant_id": tenant_id},
                context={"content_length": int(request.headers.get("content-length") or 0)},
            )
        )
        if not decision.allow:
            async with ctx.database.transaction() as uow:
                await uow.audit.append(
                    tenant_id, actor=caller.actor, action="policy.deny", resource="upload",
                    data={"policy_action": "upload.create", "reason": decision.reason},
                )  # fmt: skip
            raise HTTPException(403, f"policy denied upload.create: {decision.reason}")
        room = await quota_left(tenant_id)
        async with ctx.files.receiving(tenant_id, room) as incoming:
            try:
                received = await receive(request, incoming, FORM_FIELDS)
            except TooLarge:
                raise HTTPException(413, _too_large(limits, room)) from None
            if incoming.size == 0:
                raise unprocessable("the file is empty")
            try:
                content_type = sniff(incoming.head, received.declared, received.filename, allowed)
            except TypeRefused as exc:
                raise HTTPException(415, str(exc)) from None
            session_id = received.fields.get("session_id") or None
            digest = incoming.sha256
            async with ctx.files.guard(tenant_id, digest):
                async with ctx.database.transaction() as uow:
                    if session_id is not None and not await uow.sessions.get(tenant_id, session_id):
                        raise not_found("session", session_id)
                    upload_id = new_id()
                    # The audit append locks the tenant's chain first: concurrent uploads of
                    # one tenant see each other's rows in the quota check that follows.
                    await uow.audit.record(
                        AuditRecord(
                            tenant_id, caller.actor, "upload.create", f"upload:{upload_id}",
                            {"sha256": digest, "size": incoming.size, "type": content_type},
                        )
                    )  # fmt: skip
                    count, used = await uow.uploads.usage(tenant_id)
                    # Bytes the tenant keeps already cost nothing more (they are stored once).
                    shared = await uow.uploads.sharing(tenant_id, digest)
                    _left(limits, count, used, 0 if shared else incoming.size)
                    upload = await uow.uploads.create(
                        tenant_id,
                        filename=received.filename,
                        content_type=content_type,
                        size=incoming.size,
                        sha256=digest,
                        path=str(ctx.files.path(tenant_id, digest)),
                        session_id=session_id,
                        upload_id=upload_id,
                    )
                await ctx.files.keep(tenant_id, incoming)
        return UploadOut.of(upload)

    async def live(tenant_id: str, upload_id: str) -> Upload:
        async with ctx.database.read() as uow:
            upload = await uow.uploads.get(tenant_id, upload_id)
        if upload is None:
            raise not_found("upload", upload_id)
        return upload

    @router.get("/{upload_id}", response_model=UploadOut, responses=problem_responses([404]))
    async def get_upload(caller: ChatCaller, upload_id: str) -> UploadOut:
        return UploadOut.of(await live(caller.tenant_id, upload_id))

    binary = {"schema": {"type": "string", "format": "binary"}}

    @router.get(
        "/{upload_id}/content",
        response_class=Response,
        responses={
            **problem_responses([404]),
            200: {
                "description": "The bytes, with the type sniffed when they were uploaded.",
                "content": {kind: binary for kind in sorted(allowed)},
            },
        },
    )
    async def get_content(caller: ChatCaller, upload_id: str) -> StreamingResponse:
        upload = await live(caller.tenant_id, upload_id)
        # `X-Content-Type-Options: nosniff` is on every answer (the edge's security headers).
        quoted = upload.filename.replace("\\", "_").replace('"', "_")
        headers = {
            "Content-Disposition": f'attachment; filename="{_ascii(quoted)}"',
            "Content-Length": str(upload.size),
        }
        chunks = ctx.files.chunks(caller.tenant_id, upload.sha256)
        return StreamingResponse(chunks, media_type=upload.content_type, headers=headers)

    @router.delete("/{upload_id}", status_code=204, responses=problem_responses([404]))
    async def delete_upload(caller: ChatCaller, upload_id: str) -> Response:
        tenant_id = caller.tenant_id
        upload = await live(tenant_id, upload_id)
        async with ctx.files.guard(tenant_id, upload.sha256):
            async with ctx.database.transaction() as uow:
                if not await uow.uploads.delete(tenant_id, upload_id):
                    raise not_found("upload", upload_id)
                await uow.audit.append(
                    tenant_id, actor=caller.actor, action="upload.delete",
                    resource=f"upload:{upload_id}", data={"sha256": upload.sha256},
                )  # fmt: skip
                shared = await uow.uploads.sharing(tenant_id, upload.sha256)
            if not shared:
                await ctx.files.remove(tenant_id, upload.sha256)
        return Response(status_code=204)

    return router


def _left(limits: UploadsSettings, count: int, used: int, adding: int = 0) -> int:
    if count >= limits.max_files_per_tenant:
        raise conflict(f"the tenant has {count} uploads, its limit; delete some first")
    left = min(limits.max_file_bytes, limits.max_bytes_per_tenant - used)
    if adding > left or left <= 0:
        raise HTTPException(
            413, f"the tenant's upload quota ({limits.max_bytes_per_tenant} bytes) is used up"
        )
    return left


def _too_large(limits: UploadsSettings, room: int) -> str:
    if room < limits.max_file_bytes:
        return f"the file does not fit in what is left of the tenant's upload quota ({room} bytes)"
    return f"the file is larger than {limits.max_file_bytes} bytes"


def _ascii(name: str) -> str:
    return name.encode("ascii", "replace").decode("ascii").replace("?", "_")
