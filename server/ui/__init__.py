"""The review UI for security staff: server-rendered pages under /ui, served by the collector."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from server.ui import access_pages, admin_pages, auth_pages, case_pages, device_pages, egress_pages, event_pages, fleet_pages, mark_pages, people_pages
from server.ui.render import STATIC_DIR, UiHeaders, UiRoute, error_page

UPLOAD_PATH = "/ui/signatures/publish"
UPLOAD_LIMIT = 64 << 20
"""Request body limit of the signature upload form (the API's publish call allows the same)."""
UPLOAD_LIMITS = {("POST", UPLOAD_PATH): UPLOAD_LIMIT, **mark_pages.UPLOAD_LIMITS}
"""Every UI form that takes more than the default body limit (server/api/app.py BoundedBodies)."""

_unknown = APIRouter(route_class=UiRoute, include_in_schema=False)


@_unknown.get("/ui/{rest:path}")
def not_found(request: Request, rest: str) -> Response:
    return error_page(request, 404, "There is no such page. The menu above lists what there is.")


def install(app: FastAPI) -> None:
    """Add the UI's pages, its static files and its security headers to the collector's app."""
    for module in (auth_pages, event_pages, fleet_pages, admin_pages, device_pages, egress_pages, mark_pages, access_pages, people_pages, case_pages):
        app.include_router(module.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    app.include_router(_unknown)  # last: only paths nothing else answers
    app.add_middleware(UiHeaders)
