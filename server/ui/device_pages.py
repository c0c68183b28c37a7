"""The admin Devices page: a vendor's USB policy, its exceptions, and its quarantined files.

Admins only, like Signatures and the audit log: reviewers neither see the link nor open the
page (they read a policy through the API). Every form posts with the session's CSRF token and
calls the same store functions as the API and the CLI, which audit the change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Path, Query, Request
from sqlalchemy import Connection
from starlette.responses import Response

from server.api.deps import AddressDep, CollectorDep
from server.errors import CollectorError
from server.store import devices, quarantine, vendors
from server.store.quarantine import REQUESTABLE, Op
from server.store.scope import Scope
from server.ui.render import UiRoute, redirect, render
from server.ui.session import AdminDep, AdminPosterDep

router = APIRouter(prefix="/ui/devices", route_class=UiRoute, include_in_schema=False)
VendorForm = Annotated[str, Form(min_length=1, max_length=128)]
NOTICES = {
    "policy": "Policy saved: agents fetch the new version with their next heartbeat.",
    "granted": "Exception granted; agents get it with their next heartbeat.",
    "revoked": "Exception revoked; agents drop it with their next heartbeat.",
    "release": "Release queued: the agent holding the file restores it when it next calls.",
    "delete": "Delete queued: the agent holding the file deletes its encrypted copy when it next calls.",
}
DURATIONS = ("1h", "4h", "8h", "1d", "3d", "7d")


def allowed_text(allowed: list[dict[str, Any]]) -> str:
    """The allowed list as the form's lines (what ``devices.parse_device`` reads back)."""
    return "\n".join(f"{a['vendor_id']}:{a['product_id']}:{a['serial']}" + (f" # {a['note']}" if a["note"] else "") for a in allowed)


def _page(
    request: Request,
    collector: Any,
    vendor: str,
    *,
    scope: Scope,
    problem: str | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    with collector.db.read() as conn:
        names = [v["name"] for v in vendors.list_visible(conn, scope=scope)]
        policy = devices.get_policy(conn, vendor=vendor, now=collector.clock(), scope=scope) if vendor in names else None
        items = quarantine.list_items(conn, vendor=vendor, scope=scope) if vendor in names else []
    kept = {"allowed": allowed_text(policy["allowed"]) if policy else "", "action": policy["action"] if policy else "audit", **(form or {})}
    context = {
        "vendor_names": names,
        "vendor": vendor if vendor in names else "",
        "policy": policy,
        "items": items,
        "requestable": REQUESTABLE,
        "form": kept,
        "actions": devices.ACTIONS,
        "durations": DURATIONS,
        "problem": problem,
        "notice": NOTICES.get(request.query_params.get("notice", "")),
    }
    return render(request, "devices.html", context, status=status)


def _change(
    request: Request,
    collector: Any,
    vendor: str,
    notice: str,
    change: Callable[[Connection], object],
    *,
    scope: Scope,
    form: dict[str, str] | None = None,
) -> Response:
    """Make one change (the store function audits it) and go back to the vendor's page saying so;
    a refused change shows the page again with why, keeping what was typed in ``form``."""
    try:
        with collector.db.write() as conn:
            change(conn)
    except CollectorError as exc:
        return _page(request, collector, vendor, scope=scope, problem=str(exc), form=form, status=exc.status_code)
    return redirect(f"/ui/devices?vendor={quote(vendor, safe='')}&notice={notice}")


@router.get("")
def devices_page(request: Request, collector: CollectorDep, viewer: AdminDep, vendor: Annotated[str, Query(max_length=128)] = "") -> Response:
    return _page(request, collector, vendor, scope=viewer.user.scope)


@router.post("/policy")
def set_policy(
    request: Request,
    collector: CollectorDep,
    viewer: AdminPosterDep,
    address: AddressDep,
    vendor: VendorForm,
    action: Annotated[str, Form(max_length=16)],
    allowed: Annotated[str, Form(max_length=64 << 10)] = "",
) -> Response:
    def change(conn: Connection) -> None:
        entries = [devices.parse_device(line) for line in allowed.splitlines() if line.strip()]
        devices.set_policy(conn, vendor=vendor, action=action, allowed=entries, actor=viewer.user.name, address=address, now=collector.clock())

    return _change(request, collector, vendor, "policy", change, scope=viewer.user.scope, form={"allowed": allowed, "action": action})


@router.post("/exceptions")
def grant_exception(
    request: Request,
    collector: CollectorDep,
    viewer: AdminPosterDep,
    address: AddressDep,
    vendor: VendorForm,
    duration: Annotated[str, Form(max_length=16)],
    reason: Annotated[str, Form(max_length=devices.MAX_REASON)],
    vendor_id: Annotated[str, Form(max_length=8)] = "",
    product_id: Annotated[str, Form(max_length=8)] = "",
    serial: Annotated[str, Form(max_length=devices.MAX_SERIAL)] = "",
) -> Response:
    device = {"vendor_id": vendor_id, "product_id": product_id, "serial": serial}
    return _change(
        request, collector, vendor, "granted",
        lambda conn: devices.grant_exception(conn, vendor=vendor, device=device, duration=duration, reason=reason, actor=viewer.user.name, address=address, now=collector.clock()),
        scope=viewer.user.scope,
    )  # fmt: skip


@router.post("/exceptions/{exception_id}/revoke")
def revoke_exception(
    request: Request,
    exception_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    collector: CollectorDep,
    viewer: AdminPosterDep,
    address: AddressDep,
    vendor: VendorForm,
) -> Response:
    return _change(
        request, collector, vendor, "revoked",
        lambda conn: devices.revoke_exception(conn, vendor=vendor, exception_id=exception_id, actor=viewer.user.name, address=address, now=collector.clock()),
        scope=viewer.user.scope,
    )  # fmt: skip


@router.post("/quarantine/{quarantine_id}/{op}")
def request_quarantine(
    request: Request,
    quarantine_id: Annotated[str, Path(pattern=r"^[0-9a-fA-F-]{36}$")],
    op: Annotated[str, Path(pattern="^(release|delete)$")],
    collector: CollectorDep,
    viewer: AdminPosterDep,
    address: AddressDep,
    vendor: VendorForm,
) -> Response:
    chosen: Op = "release" if op == "release" else "delete"
    return _change(
        request, collector, vendor, chosen,
        lambda conn: quarantine.request(conn, quarantine_id=quarantine_id, op=chosen, actor=viewer.user.name, address=address, now=collector.clock()),
        scope=viewer.user.scope,
    )  # fmt: skip
