"""The admin Marks page: the marks minted, watermarked copies, canary decoys and tracing a found file.

Admins only, like Devices and Egress: a mark names a seat, and who a copy was given to is what a
leaker would most like to learn. Reviewers see a seat only on an event that carries a mark (the
event page's Marks card). Every form posts with the session's CSRF token and calls the same
service as the API and the CLI (server/marking.py, server/canaries.py), which audit what they do.

Marking answers with the marked copy itself (one file) or a zip of them (several), so nothing
marked is kept on the collector beyond its hash; a decoy is a download too.
"""

from __future__ import annotations

import io
import os
import zipfile
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import Response

from server import canaries, marking
from server.api.deps import AddressDep, CollectorDep
from server.api.mark_routes import UPLOAD_LIMIT
from server.collector import Collector
from server.decoys import KINDS as CANARY_KINDS
from server.errors import CollectorError, InvalidInput, TooLarge
from server.keys import marks_key
from server.store import marks, vendors
from server.ui.render import UiRoute, render
from server.ui.session import AdminDep, AdminPosterDep

router = APIRouter(prefix="/ui/marks", route_class=UiRoute, include_in_schema=False)
PAGE = 100
UPLOAD_LIMITS = {("POST", "/ui/marks/apply"): UPLOAD_LIMIT + (1 << 20), ("POST", "/ui/marks/trace"): UPLOAD_LIMIT + (1 << 20)}
"""Request body limits of the upload forms (server/api/app.py BoundedBodies): the files and the form's fields."""
_FIELD_CHARS = 1000


def _page(request: Request, collector: Collector, *, problem: str | None = None, traced: list[dict[str, Any]] | None = None, status: int = 200) -> Response:
    params = request.query_params
    view = {name: params.get(name, "")[:255] for name in ("vendor", "seat", "kind", "before")}
    if view["kind"] not in marks.KINDS:
        view["kind"] = ""
    with collector.db.read() as conn:
        names = [v["name"] for v in vendors.list_all(conn)]
        try:
            items = marks.list_marks(conn, vendor=view["vendor"] or None, seat=view["seat"] or None, kind=view["kind"] or None, limit=PAGE, before=view["before"] or None)
        except InvalidInput as exc:
            problem = problem or f"{exc} (showing the newest marks)"
            view["before"] = ""
            items = marks.list_marks(conn, vendor=view["vendor"] or None, seat=view["seat"] or None, kind=view["kind"] or None, limit=PAGE)
    older = None
    if len(items) == PAGE:
        older = "/ui/marks?" + urlencode({**{k: v for k, v in view.items() if v and k != "before"}, "before": items[-1]["mark_id"]})
    context = {
        "vendor_names": names,
        "view": view,
        "items": items,
        "older": older,
        "canary_kinds": CANARY_KINDS,
        "max_files": marking.MAX_FILES,
        "max_mib": UPLOAD_LIMIT >> 20,
        "problem": problem,
        "traced": traced,
    }
    return render(request, "marks.html", context, status=status)


@router.get("")
def marks_page(
    request: Request,
    collector: CollectorDep,
    viewer: AdminDep,
    vendor: Annotated[str, Query(max_length=128)] = "",
    seat: Annotated[str, Query(max_length=255)] = "",
    kind: Annotated[str, Query(max_length=16)] = "",
    before: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    return _page(request, collector)


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip()[:_FIELD_CHARS] if isinstance(value, str) else ""


async def _files(form: Any) -> list[tuple[str, bytes]]:
    """The uploaded files (name, bytes), at most ``marking.MAX_FILES`` and ``UPLOAD_LIMIT`` together."""
    uploads = [item for item in form.getlist("files") if isinstance(item, UploadFile) and item.filename]
    if not uploads:
        raise InvalidInput("Choose at least one file.")
    if len(uploads) > marking.MAX_FILES:
        raise InvalidInput(f"At most {marking.MAX_FILES} files at a time.")
    files, total = [], 0
    for upload in uploads:
        data = await upload.read(UPLOAD_LIMIT - total + 1)
        total += len(data)
        if total > UPLOAD_LIMIT:
            raise TooLarge(f"The files are larger than {UPLOAD_LIMIT >> 20} MiB together.")
        files.append((str(upload.filename), data))
    return files


def _download(name: str, data: bytes, media_type: str = "application/octet-stream", headers: dict[str, str] | None = None) -> Response:
    """``data`` as a file to save; the name is quoted (RFC 6266) so no character of it reaches the header raw."""
    fallback = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name) or "file"
    disposition = f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
    return Response(data, media_type=media_type, headers={"Content-Disposition": disposition, **(headers or {})})


def _unique(name: str, taken: set[str]) -> str:
    stem, suffix = os.path.splitext(name)
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem} ({n}){suffix}"
    taken.add(candidate)
    return candidate


def _zipped(results: list[marking.Applied | marking.Refused]) -> bytes:
    out = io.BytesIO()
    taken: set[str] = set()
    refused = [f"{r.name}: {r.error}" for r in results if isinstance(r, marking.Refused)]
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for r in results:
            if isinstance(r, marking.Applied):
                archive.writestr(_unique(r.name, taken), r.data)
        listing = [f"{r.name}\t{r.mark_id}\t{r.format}\t{','.join(r.carriers)}" for r in results if isinstance(r, marking.Applied)]
        text = "Marked copies (name, mark, format, carriers):\n" + "\n".join(listing) + "\n"
        if refused:
            text += "\nNot marked:\n" + "\n".join(refused) + "\n"
        archive.writestr(_unique("MARKS.txt", taken), text)
    return out.getvalue()


@router.post("/apply")
async def apply(request: Request, collector: CollectorDep, viewer: AdminPosterDep, address: AddressDep) -> Response:
    """The marked copy (one file) or a zip of the marked copies and a list of what was not marked."""
    form = await request.form()
    vendor, seat, note = _field(form, "vendor"), _field(form, "seat"), _field(form, "note")
    try:
        if not vendor:
            raise InvalidInput("Choose the vendor whose staff get the copies.")
        files = await _files(form)
        results = await run_in_threadpool(
            lambda: marking.apply(
                collector.db, key=marks_key(collector.settings.data_dir), files=files, vendor=vendor, seat=seat or None, actor=viewer.user.name, now=collector.clock(), note=note, address=address
            )
        )
    except CollectorError as exc:
        return _page(request, collector, problem=f"Nothing was marked: {exc}", status=exc.status_code)
    applied = [r for r in results if isinstance(r, marking.Applied)]
    if not applied:
        reasons = "; ".join(f"{r.name}: {r.error}" for r in results if isinstance(r, marking.Refused))
        return _page(request, collector, problem=f"Nothing was marked: {reasons}", status=422)
    if len(results) == 1:
        only = applied[0]
        return _download(only.name, only.data, headers={"X-DLP-Mark-Id": only.mark_id})
    stamp = collector.clock().strftime("%Y%m%dT%H%M%SZ")
    return _download(f"marked-{stamp}.zip", _zipped(results), media_type="application/zip")


def _create_canary(collector: Collector, *, vendor: str, seat: str | None, kind: str, actor: str, address: str | None) -> canaries.Canary:
    key = marks_key(collector.settings.data_dir)  # a file read, like the database work: off the event loop
    with collector.db.write() as conn:
        return canaries.create_canary(conn, key=key, vendor=vendor, seat=seat, kind=kind, actor=actor, now=collector.clock(), address=address)


@router.post("/canary")
async def canary(request: Request, collector: CollectorDep, viewer: AdminPosterDep, address: AddressDep) -> Response:
    """The decoy to plant; its rule is in the vendor's next bundle."""
    form = await request.form()
    vendor, seat, kind = _field(form, "vendor"), _field(form, "seat"), _field(form, "kind")
    try:
        if not vendor:
            raise InvalidInput("Choose the vendor the decoy is for.")
        if kind not in CANARY_KINDS:
            raise InvalidInput(f"Choose the kind of decoy ({', '.join(CANARY_KINDS)}).")
        made = await run_in_threadpool(_create_canary, collector, vendor=vendor, seat=seat or None, kind=kind, actor=viewer.user.name, address=address)
    except CollectorError as exc:
        return _page(request, collector, problem=f"No canary was made: {exc}", status=exc.status_code)
    headers = {"X-DLP-Mark-Id": made.mark_id, "X-DLP-Signature-Version": str(made.signature_version)}
    return _download(made.name, made.data, headers=headers)


@router.post("/trace")
async def trace(request: Request, collector: CollectorDep, viewer: AdminPosterDep, address: AddressDep) -> Response:
    """The page again, with a table of the marks each uploaded file carries."""
    form = await request.form()
    try:
        files = await _files(form)
        traced = await run_in_threadpool(lambda: marking.trace(collector.db, key=marks_key(collector.settings.data_dir), files=files, actor=viewer.user.name, now=collector.clock(), address=address))
    except CollectorError as exc:
        return _page(request, collector, problem=f"Nothing was traced: {exc}", status=exc.status_code)
    return _page(request, collector, traced=traced)
