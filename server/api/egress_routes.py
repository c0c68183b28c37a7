"""Egress policy per vendor: reviewers read which remotes and upload destinations are allowed, admins set them.

Thin: the rules (pattern checks, the audit entry, the version) live in server/store/egress.py,
which the CLI and the UI call too.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from server.api.deps import AddressDep, AdminDep, CollectorDep, UserDep
from server.api.egress_schemas import EgressPolicyIn, EgressPolicyPublic
from server.store import egress

router = APIRouter(prefix="/api/v1", tags=["egress"])
VendorName = Annotated[str, Path(min_length=1, max_length=128)]


@router.get("/vendors/{name}/egress-policy", response_model=EgressPolicyPublic, summary="A vendor's allowed git remotes and upload destinations")
def get_policy(name: VendorName, collector: CollectorDep, user: UserDep) -> dict[str, Any]:
    with collector.db.read() as conn:
        return egress.get_policy(conn, vendor=name, scope=user.scope)


@router.put(
    "/vendors/{name}/egress-policy",
    response_model=EgressPolicyPublic,
    summary="Set a vendor's allowed remotes and whether egress to them is still reported",
    responses={422: {"description": "a pattern is not valid (the message names it)"}},
)
def set_policy(name: VendorName, body: EgressPolicyIn, collector: CollectorDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    with collector.db.write() as conn:
        return egress.set_policy(conn, vendor=name, allowed_remotes=body.allowed_remotes, report_allowed=body.report_allowed, actor=admin.name, address=address, now=collector.clock())
