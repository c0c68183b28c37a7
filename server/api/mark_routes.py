"""Marks: watermark files for a seat, mint canaries, trace found files to seats, list what was minted.

Admin only and audited, since a mark names a person: the rules live in server/marking.py,
server/store/marks.py and server/canaries.py, which the CLI and the UI call too. Uploads are
multipart (``file``, repeatable) and bounded: 64 MiB per request (app.py) and 100 files.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from server import marking
from server.api.deps import AddressDep, AdminDep, CollectorDep
from server.api.mark_schemas import AppliedOut, CanaryIn, CanaryOut, MarkList, TraceOut
from server.errors import InvalidInput
from server.keys import marks_key
from server.store import marks as mark_store

router = APIRouter(prefix="/api/v1", tags=["marks"])

APPLY_PATH = "/api/v1/marks/apply"
TRACE_PATH = "/api/v1/trace"
UPLOAD_LIMIT = 64 << 20
UPLOAD_LIMITS = {("POST", APPLY_PATH): UPLOAD_LIMIT, ("POST", TRACE_PATH): UPLOAD_LIMIT}
"""For app.py's bounded bodies: a request's whole multipart body."""
_FIELDS = ("vendor", "seat", "note")


async def _upload(request: Request) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """The request's files (``file``, repeatable) and text fields; at most MAX_FILES files."""
    form = await request.form(max_files=marking.MAX_FILES + 1, max_fields=len(_FIELDS) + 1, max_part_size=marking.MAX_NOTE_CHARS * 4 + 1024)
    files: list[tuple[str, bytes]] = []
    fields: dict[str, str] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name != "file":
                    raise InvalidInput(f"unexpected file field {name[:64]!r}; send files as 'file'")
                if len(files) >= marking.MAX_FILES:
                    raise InvalidInput(f"at most {marking.MAX_FILES} files at a time")
                files.append((value.filename or "file", await value.read(UPLOAD_LIMIT + 1)))
            elif name in _FIELDS:
                fields[name] = value
            else:
                raise InvalidInput(f"unexpected field {name[:64]!r}")
    finally:
        await form.close()
    if not files:
        raise InvalidInput("no files: send them as multipart fields named 'file'")
    return files, fields


@router.post(
    "/marks/apply",
    response_model=AppliedOut,
    response_model_exclude_none=True,
    summary="Watermark files for a vendor's seat: the marked copies come back (multipart: file..., vendor, seat, note)",
    responses={404: {"description": "no such vendor"}, 413: {"description": "more than 64 MiB"}, 422: {"description": "no files, too many, or a bad seat"}},
)
async def apply_marks(request: Request, collector: CollectorDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    files, fields = await _upload(request)
    vendor = fields.get("vendor", "").strip()
    if not vendor:
        raise InvalidInput("vendor is required")
    key = marks_key(collector.settings.data_dir)
    results = await run_in_threadpool(
        lambda: marking.apply(collector.db, key=key, files=files, vendor=vendor, seat=fields.get("seat"), actor=admin.name, now=collector.clock(), note=fields.get("note"), address=address)
    )
    items: list[dict[str, Any]] = []
    for result in results:
        if isinstance(result, marking.Refused):
            items.append({"name": result.name, "error": result.error})
        else:
            items.append(
                {
                    "name": result.name,
                    "mark_id": result.mark_id,
                    "format": result.format,
                    "carriers": list(result.carriers),
                    "size": result.size,
                    "marked_size": result.marked_size,
                    "content_base64": base64.b64encode(result.data).decode("ascii"),
                }
            )
    return {"items": items}


@router.post(
    "/trace",
    response_model=TraceOut,
    summary="Which registered marks do these files carry (multipart: file...)? Strongest evidence first; none: an empty list",
    responses={413: {"description": "more than 64 MiB"}, 422: {"description": "no files or too many"}},
)
async def trace(request: Request, collector: CollectorDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    files, fields = await _upload(request)
    if fields:
        raise InvalidInput(f"trace takes only files, not {', '.join(sorted(fields))}")
    key = marks_key(collector.settings.data_dir)
    items = await run_in_threadpool(lambda: marking.trace(collector.db, key=key, files=files, actor=admin.name, now=collector.clock(), address=address))
    return {"items": items}


@router.post("/marks/canary", status_code=201, response_model=CanaryOut, summary="Mint a canary decoy for a vendor (and seat); its rule joins the vendor's bundle")
def canary(body: CanaryIn, collector: CollectorDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    from server.canaries import create_canary

    key = marks_key(collector.settings.data_dir)
    with collector.db.write() as conn:
        made = create_canary(conn, key=key, vendor=body.vendor, seat=body.seat, kind=body.kind, actor=admin.name, now=collector.clock(), address=address)
    return {
        "mark_id": made.mark_id,
        "name": made.name,
        "kind": made.kind,
        "content_base64": base64.b64encode(made.data).decode("ascii"),
        "signature_version": made.signature_version,
    }


@router.get("/marks", response_model=MarkList, summary="Marks minted, newest first (admins only: a mark names a seat)")
def list_marks(
    collector: CollectorDep,
    admin: AdminDep,
    vendor: Annotated[str | None, Query(max_length=128)] = None,
    seat: Annotated[str | None, Query(max_length=255)] = None,
    kind: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[str | None, Query(pattern=r"^mk_[0-9a-f]{16}$")] = None,
) -> dict[str, Any]:
    with collector.db.read() as conn:
        return {"items": mark_store.list_marks(conn, vendor=vendor, seat=seat, kind=kind, limit=limit, before=before)}
