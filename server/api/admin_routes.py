"""Admin-only API: vendors and their office ranges, enrollment tokens, users, revocation, audit log."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from server.api.deps import AddressDep, AdminDep, CollectorDep
from server.api.schemas import (
    AuditPage,
    EnrollmentTokenCreated,
    EnrollmentTokenIn,
    UserCreated,
    UserIn,
    UserList,
    VendorIn,
    VendorPublic,
    VendorRangesIn,
)
from server.api.signature_schemas import AgentWithIndexesPublic
from server.durations import parse_duration
from server.errors import InvalidInput
from server.netaddr import parse_networks
from server.store import agents, audit, enrollment, vendors
from server.store import users as user_store

router = APIRouter(prefix="/api/v1", tags=["admin"])
# Far enough for any real rollout; beyond it a typo like 999999w would overflow the expiry date.
_MAX_TOKEN_LIFETIME = timedelta(days=3650)


def _ranges(values: list[str]) -> list[str]:
    try:
        return [str(network) for network in parse_networks(values)]
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _lifetime(text: str) -> timedelta:
    try:
        lifetime = parse_duration(text)
    except ValueError as exc:
        raise InvalidInput(f"expires_in: {exc}") from None
    if lifetime > _MAX_TOKEN_LIFETIME:
        raise InvalidInput(f"expires_in is at most {_MAX_TOKEN_LIFETIME.days}d")
    return lifetime


@router.post("/vendors", status_code=201, response_model=VendorPublic, summary="Create a vendor, optionally with its office ranges")
def create_vendor(body: VendorIn, collector: CollectorDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    now = collector.clock()
    cidrs = _ranges(body.allowed_cidrs)
    with collector.db.write() as conn:
        created = vendors.create(conn, name=body.name, allowed_cidrs=cidrs, now=now)
        audit.append(conn, actor=admin.name, action="vendor.create", target=body.name, details={"allowed_cidrs": cidrs}, address=address, now=now)
    return created


@router.put("/vendors/{name}/ranges", response_model=VendorPublic, summary="Replace a vendor's allowed address ranges (CIDR)")
def set_vendor_ranges(name: Annotated[str, Path(max_length=128)], body: VendorRangesIn, collector: CollectorDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    now = collector.clock()
    cidrs = _ranges(body.allowed_cidrs)
    with collector.db.write() as conn:
        updated = vendors.set_ranges(conn, name=name, allowed_cidrs=cidrs)
        audit.append(conn, actor=admin.name, action="vendor.ranges", target=name, details={"allowed_cidrs": cidrs}, address=address, now=now)
    return updated


@router.post("/enrollment-tokens", status_code=201, response_model=EnrollmentTokenCreated, summary="Create an enrollment token for a vendor")
def create_enrollment_token(body: EnrollmentTokenIn, collector: CollectorDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    now = collector.clock()
    lifetime = _lifetime(body.expires_in)
    with collector.db.write() as conn:
        token, record = enrollment.create_token(conn, vendor=body.vendor, uses=body.uses, lifetime=lifetime, created_by=admin.name, now=now)
        audit.append(conn, actor=admin.name, action="token.create", target=body.vendor, details=record, address=address, now=now)
    return {"token": token, **record}


@router.post("/agents/{agent_id}/revoke", response_model=AgentWithIndexesPublic, summary="Revoke an agent: its calls are refused from now on")
def revoke_agent(agent_id: Annotated[str, Path(max_length=64)], collector: CollectorDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    now = collector.clock()
    with collector.db.write() as conn:
        agents.revoke(conn, agent_id=agent_id, now=now)
        audit.append(conn, actor=admin.name, action="agent.revoke", target=agent_id, address=address, now=now)
        return agents.get(conn, agent_id=agent_id, scope=admin.scope)


@router.get("/users", response_model=UserList, summary="Reviewers and admins")
def list_users(collector: CollectorDep, admin: AdminDep) -> dict[str, Any]:
    with collector.db.read() as conn:
        return {"items": user_store.list_all(conn)}


@router.post("/users", status_code=201, response_model=UserCreated, summary="Add a reviewer or admin (the password is shown once)")
def create_user(body: UserIn, collector: CollectorDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    now = collector.clock()
    with collector.db.write() as conn:
        # An unknown name is refused (404), never created in passing: a typo would make an unaudited vendor.
        vendor_ids = None if body.vendors is None else tuple(vendors.id_of(conn, name) for name in body.vendors)
        try:
            user, password, token = user_store.create(conn, name=body.name, role=body.role, now=now, vendor_ids=vendor_ids)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        details: dict[str, Any] = {"role": user.role}
        if body.vendors is not None:
            details["vendors"] = sorted(body.vendors)
        audit.append(conn, actor=admin.name, action="user.create", target=user.name, details=details, address=address, now=now)
    vendor_names = None if body.vendors is None else sorted(body.vendors)
    return {"user": user.name, "role": user.role, "vendors": vendor_names, "password": password, "api_token": token}


@router.get("/audit", response_model=AuditPage, summary="The audit log, newest first, with the hash chain verified")
def list_audit(
    collector: CollectorDep,
    admin: AdminDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> dict[str, Any]:
    with collector.db.read() as conn:
        check = audit.verify(conn)
        items = audit.list_entries(conn, limit=limit, before=before)
    next_before = items[-1]["seq"] if len(items) == limit and items[-1]["seq"] > 1 else None
    return {"chain": {"ok": check.ok, "entries": check.entries, "problem": check.problem}, "items": items, "next_before": next_before}
