"""Admin pages of IP records: the session log and the denied networks."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Path, Query, Request
from starlette.responses import Response

from server.api.access_routes import session_page
from server.api.deps import AddressDep, CollectorDep
from server.errors import CollectorError
from server.store import denylist, sessions, vendors
from server.ui.render import UiRoute, redirect, render
from server.ui.session import AdminDep, AdminPosterDep

router = APIRouter(prefix="/ui", route_class=UiRoute, include_in_schema=False)
SESSIONS_PAGE = 50


@router.get("/sessions")
def session_log(
    request: Request,
    collector: CollectorDep,
    viewer: AdminDep,
    user: Annotated[str, Query(max_length=128)] = "",
    address: Annotated[str, Query(max_length=45)] = "",
    country: Annotated[str, Query(max_length=2)] = "",
    state: Annotated[str, Query(max_length=16)] = "",
    offset: Annotated[int, Query(ge=0, le=sessions.MAX_OFFSET)] = 0,
) -> Response:
    filters = {"user": user, "address": address, "country": country, "state": state}
    found = session_page(collector, **{k: v or None for k, v in filters.items()}, limit=SESSIONS_PAGE, offset=offset)
    query = urlencode({k: v for k, v in filters.items() if v})
    context = {"page": found, "filters": filters, "states": sessions.STATES, "query": query, "page_size": SESSIONS_PAGE}
    return render(request, "sessions.html", context)


def _denylist_page(request: Request, collector: CollectorDep, *, problem: str | None = None, status: int = 200) -> Response:
    with collector.db.read() as conn:
        context = {
            "entries": denylist.list_all(conn),
            "refusals": denylist.refusals(conn),
            "vendor_names": [v["name"] for v in vendors.list_all(conn)],
            "problem": problem,
        }
    return render(request, "denylist.html", context, status=status)


@router.get("/denylist")
def denylist_view(request: Request, collector: CollectorDep, viewer: AdminDep) -> Response:
    return _denylist_page(request, collector)


@router.post("/denylist")
def denylist_add(
    request: Request,
    collector: CollectorDep,
    viewer: AdminPosterDep,
    address: AddressDep,
    cidr: Annotated[str, Form(max_length=64)] = "",
    vendor: Annotated[str, Form(max_length=128)] = "",
    note: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    try:
        with collector.db.write() as conn:
            denylist.add(conn, cidr=cidr, vendor=vendor or None, note=note, actor=viewer.user.name, address=address, now=collector.clock())
    except CollectorError as exc:
        return _denylist_page(request, collector, problem=str(exc), status=exc.status_code)
    collector.denied.invalidate()
    return redirect("/ui/denylist")


@router.post("/denylist/{entry_id}/remove")
def denylist_remove(request: Request, collector: CollectorDep, viewer: AdminPosterDep, address: AddressDep, entry_id: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> Response:
    try:
        with collector.db.write() as conn:
            denylist.remove(conn, entry_id=entry_id, actor=viewer.user.name, address=address, now=collector.clock())
    except CollectorError as exc:
        return _denylist_page(request, collector, problem=str(exc), status=exc.status_code)
    collector.denied.invalidate()
    return redirect("/ui/denylist")
