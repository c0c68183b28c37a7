"""Device control and quarantine: admins set each vendor's USB policy and release or delete
quarantined files; agents fetch their vendor's signed policy. Thin: the rules live in
server/store/devices.py and server/store/quarantine.py, which the CLI and the UI call too."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import JSONResponse, Response

from server.api.agent_routes import record_agent_call
from server.api.deps import AddressDep, AdminDep, CollectorDep, TokenDep, UserDep
from server.api.device_schemas import (
    DeviceExceptionIn,
    DeviceExceptionPublic,
    DeviceExceptionRevoked,
    DevicePolicyIn,
    DevicePolicyPublic,
    QuarantineList,
    QuarantineRequested,
    SignedDevicePolicy,
)
from server.errors import NotFound
from server.keys import public_key_hex, quarantine_key
from server.store import agents, devices, quarantine
from server.store.quarantine import STATES, Op

router = APIRouter(prefix="/api/v1", tags=["devices"])
VendorName = Annotated[str, Path(min_length=1, max_length=128)]
QuarantineId = Annotated[str, Path(pattern=r"^[0-9a-fA-F-]{36}$")]
NO_POLICY = "no device policy"


@router.get(
    "/agent/device-policy",
    response_model=SignedDevicePolicy,
    summary="The calling agent's vendor device policy, signed (ETag / If-None-Match)",
    responses={304: {"description": "unchanged"}, 404: {"description": "the vendor has no device policy"}},
)
def agent_policy(
    collector: CollectorDep, token: TokenDep, address: AddressDep, if_none_match: Annotated[str | None, Header(max_length=256)] = None
) -> Response:
    if collector.signing_key is None:
        raise NotFound("this collector has no signing key; run dlp-server init")
    with collector.db.write() as conn:
        identity = agents.authenticate(conn, value=token)
        record_agent_call(conn, collector, identity, address)
        public = public_key_hex(quarantine_key(collector.settings.data_dir))
        signed = devices.signed_document(conn, vendor=identity.vendor, signing_key=collector.signing_key, quarantine_public_key=public, now=collector.clock())
    if signed is None:
        raise NotFound(NO_POLICY)
    etag = f'"{signed.etag}"'
    if if_none_match and if_none_match.strip('"') == signed.etag:
        return Response(status_code=304, headers={"ETag": etag})
    return JSONResponse({"document": signed.document, "signature": signed.signature}, headers={"ETag": etag, "X-DLP-Device-Policy-Version": str(signed.version)})


@router.get("/vendors/{name}/device-policy", response_model=DevicePolicyPublic, summary="A vendor's USB device policy with the exceptions in force")
def get_policy(name: VendorName, collector: CollectorDep, user: UserDep) -> dict[str, Any]:
    with collector.db.read() as conn:
        policy = devices.get_policy(conn, vendor=name, now=collector.clock(), scope=user.scope)
    if policy is None:
        raise NotFound(NO_POLICY)
    return policy


@router.put("/vendors/{name}/device-policy", response_model=DevicePolicyPublic, summary="Set a vendor's action for removable volumes and its allowed devices")
def set_policy(name: VendorName, body: DevicePolicyIn, collector: CollectorDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    allowed = [entry.model_dump() for entry in body.allowed]
    with collector.db.write() as conn:
        return devices.set_policy(conn, vendor=name, action=body.action, allowed=allowed, actor=admin.name, address=address, now=collector.clock())


@router.post("/vendors/{name}/device-exceptions", status_code=201, response_model=DeviceExceptionPublic, summary="Let one device through for a while")
def grant_exception(name: VendorName, body: DeviceExceptionIn, collector: CollectorDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    device = body.model_dump(include={"vendor_id", "product_id", "serial"})
    with collector.db.write() as conn:
        return devices.grant_exception(
            conn, vendor=name, device=device, duration=body.duration, reason=body.reason, actor=admin.name, address=address, now=collector.clock()
        )


@router.delete("/vendors/{name}/device-exceptions/{exception_id}", response_model=DeviceExceptionRevoked, summary="End an exception now")
def revoke_exception(
    name: VendorName, exception_id: Annotated[int, Path(ge=1, le=2**31 - 1)], collector: CollectorDep, admin: AdminDep, address: AddressDep
) -> dict[str, Any]:
    with collector.db.write() as conn:
        return devices.revoke_exception(conn, vendor=name, exception_id=exception_id, actor=admin.name, address=address, now=collector.clock())


@router.get("/quarantine", response_model=QuarantineList, summary="Quarantined files, newest first")
def list_quarantine(
    collector: CollectorDep,
    admin: AdminDep,
    vendor: Annotated[str | None, Query(max_length=128)] = None,
    agent: Annotated[str | None, Query(max_length=64)] = None,
    state: Annotated[str | None, Query(pattern=f"^({'|'.join(STATES)})?$")] = None,
    limit: Annotated[int, Query(ge=1, le=quarantine.MAX_LIST)] = 200,
) -> dict[str, Any]:
    with collector.db.read() as conn:
        items = quarantine.list_items(conn, vendor=vendor or None, agent_id=agent or None, state=state or None, limit=limit, scope=admin.scope)
    return {"items": items}


def _request(collector: Any, quarantine_id: str, op: Op, actor: str, address: str | None) -> dict[str, Any]:
    with collector.db.write() as conn:
        return quarantine.request(conn, quarantine_id=quarantine_id, op=op, actor=actor, address=address, now=collector.clock())


@router.post("/quarantine/{quarantine_id}/release", status_code=202, response_model=QuarantineRequested, summary="Ask the holding agent to restore the file")
def release(quarantine_id: QuarantineId, collector: CollectorDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    return _request(collector, quarantine_id, "release", admin.name, address)


@router.post("/quarantine/{quarantine_id}/delete", status_code=202, response_model=QuarantineRequested, summary="Ask the holding agent to delete its encrypted copy")
def delete(quarantine_id: QuarantineId, collector: CollectorDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    return _request(collector, quarantine_id, "delete", admin.name, address)
