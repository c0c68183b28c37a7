"""The admin Egress page: where each vendor's staff may push and upload, and whether that is still reported.

Admins only, like Devices: reviewers neither see the link nor open the page (they read a
policy through the API). The form posts with the session's CSRF token and calls the same
store function as the API and the CLI, which checks the patterns and audits the change.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from starlette.responses import Response

from server.api.deps import AddressDep, CollectorDep
from server.errors import CollectorError
from server.store import egress, vendors
from server.store.scope import Scope
from server.ui.render import UiRoute, redirect, render
from server.ui.session import AdminDep, AdminPosterDep

router = APIRouter(prefix="/ui/egress", route_class=UiRoute, include_in_schema=False)
NOTICES = {"saved": "Allowed remotes saved: events arriving from now on are judged by them."}


def _page(
    request: Request, collector: Any, vendor: str, *, scope: Scope, problem: str | None = None, form: dict[str, Any] | None = None, status: int = 200
) -> Response:
    with collector.db.read() as conn:
        names = [v["name"] for v in vendors.list_visible(conn, scope=scope)]
        policy = egress.get_policy(conn, vendor=vendor, scope=scope) if vendor in names else None
    kept = {"allowed": "\n".join(policy["allowed_remotes"]) if policy else "", "report_allowed": bool(policy and policy["report_allowed"]), **(form or {})}
    context = {
        "vendor_names": names,
        "vendor": vendor if vendor in names else "",
        "policy": policy,
        "form": kept,
        "max_patterns": egress.MAX_PATTERNS,
        "problem": problem,
        "notice": NOTICES.get(request.query_params.get("notice", "")),
    }
    return render(request, "egress.html", context, status=status)


@router.get("")
def egress_page(request: Request, collector: CollectorDep, viewer: AdminDep, vendor: Annotated[str, Query(max_length=128)] = "") -> Response:
    return _page(request, collector, vendor, scope=viewer.user.scope)


@router.post("/policy")
def set_policy(
    request: Request,
    collector: CollectorDep,
    viewer: AdminPosterDep,
    address: AddressDep,
    vendor: Annotated[str, Form(min_length=1, max_length=128)],
    allowed: Annotated[str, Form(max_length=512 << 10)] = "",
    report_allowed: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    patterns = [line.strip() for line in allowed.splitlines() if line.strip()]
    report = report_allowed == "on"
    try:
        with collector.db.write() as conn:
            egress.set_policy(conn, vendor=vendor, allowed_remotes=patterns, report_allowed=report, actor=viewer.user.name, address=address, now=collector.clock())
    except CollectorError as exc:
        return _page(request, collector, vendor, scope=viewer.user.scope, problem=str(exc), form={"allowed": allowed, "report_allowed": report}, status=exc.status_code)
    return redirect(f"/ui/egress?vendor={quote(vendor, safe='')}&notice=saved")
