"""Admin pages: signature versions with publish and rollback, and the audit log with its chain checked."""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.responses import Response

from server.api.deps import AddressDep, CollectorDep
from server.api.schemas import SignaturesPublishIn
from server.api.signature_routes import publish_packs, rollback_to
from server.errors import CollectorError, InvalidInput
from server.store import audit, vendors
from server.store import signatures as signature_store
from server.ui.render import UiRoute, redirect, render
from server.ui.session import AdminDep, AdminPosterDep

router = APIRouter(prefix="/ui", route_class=UiRoute, include_in_schema=False)
AUDIT_PAGE = 100
MAX_UPLOAD_BYTES = 32 << 20
RULE_SUFFIXES = (".yar", ".yara")


def _signatures_page(request: Request, collector: Any, *, form: dict[str, Any] | None = None, problem: str | None = None, status: int = 200) -> Response:
    with collector.db.read() as conn:
        versions = signature_store.versions(conn)
        listed = vendors.list_all(conn)
    notice = None
    published = request.query_params.get("published", "")
    if published.isdigit():
        notice = f"Published version {published}; agents fetch it with their next check."
    context = {
        "versions": versions,
        "vendor_names": [v["name"] for v in listed],
        "running": sum(v["agents"] for v in versions),
        "agent_total": sum(v["agents"] for v in listed),
        "form": form or {"name": "", "body": "", "vendors": [], "note": ""},
        "problem": problem,
        "notice": notice,
    }
    return render(request, "signatures.html", context, status=status)


@router.get("/signatures")
def signatures(request: Request, collector: CollectorDep, viewer: AdminDep) -> Response:
    return _signatures_page(request, collector)


async def _packs(files: list[Any], name: str, body: str) -> dict[str, str]:
    packs: dict[str, str] = {}
    for upload in files:
        if not isinstance(upload, UploadFile) or not upload.filename:
            continue
        stem, suffix = os.path.splitext(os.path.basename(upload.filename))
        if suffix.lower() not in RULE_SUFFIXES:
            raise InvalidInput(f"{upload.filename}: only .yar or .yara files are rule packs")
        data = await upload.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise InvalidInput(f"{upload.filename} is larger than {MAX_UPLOAD_BYTES >> 20} MiB")
        try:
            packs[stem] = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"{upload.filename} is not UTF-8 text") from None
    if body.strip():
        if not name.strip():
            raise InvalidInput("Give the pasted pack a name (letters, digits, _ . -).")
        packs[name.strip()] = body
    return packs


@router.post("/signatures/publish")
async def publish(request: Request, collector: CollectorDep, viewer: AdminPosterDep, address: AddressDep) -> Response:
    form = await request.form()
    name, body, note = (str(form.get(key) or "") for key in ("name", "body", "note"))
    chosen = [str(v) for v in form.getlist("vendors") if str(v)]
    kept = {"name": name, "body": body, "vendors": chosen, "note": note}
    try:
        packs = await _packs(form.getlist("files"), name, body)
        if not packs:
            raise InvalidInput("Nothing to publish: choose .yar files or paste a pack.")
        try:
            checked = SignaturesPublishIn(packs=packs, vendors=chosen or None, note=note)
        except ValidationError as exc:
            error = exc.errors()[0]
            raise InvalidInput(f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg')}") from None
        result = publish_packs(collector, packs=checked.packs, vendors=checked.vendors, remove=[], note=checked.note, actor=viewer.user.name, address=address)
    except CollectorError as exc:
        return _signatures_page(request, collector, form=kept, problem=str(exc).removeprefix("not published: "), status=exc.status_code)
    return redirect(f"/ui/signatures?published={result['version']}")


@router.post("/signatures/rollback")
def rollback(
    request: Request,
    collector: CollectorDep,
    viewer: AdminPosterDep,
    address: AddressDep,
    version: Annotated[int, Form(ge=1, le=2**31 - 1)],
) -> Response:
    try:
        result = rollback_to(collector, version=version, actor=viewer.user.name, address=address)
    except CollectorError as exc:
        return _signatures_page(request, collector, problem=str(exc), status=exc.status_code)
    return redirect(f"/ui/signatures?published={result['version']}")


@router.get("/audit")
def audit_log(
    request: Request,
    collector: CollectorDep,
    viewer: AdminDep,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> Response:
    with collector.db.read() as conn:
        check = audit.verify(conn)
        entries = audit.list_entries(conn, limit=AUDIT_PAGE, before=before)
    older = entries[-1]["seq"] if len(entries) == AUDIT_PAGE and entries[-1]["seq"] > 1 else None
    return render(request, "audit.html", {"check": check, "entries": entries, "older": older, "before": before})
