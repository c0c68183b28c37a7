"""Signatures: agents fetch their signed bundle; admins publish and roll back; everyone sees rollout."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import Response

from agent.scanning import RuleError
from server.api.agent_routes import record_agent_call
from server.api.deps import AddressDep, AdminDep, CollectorDep, TokenDep, UserDep
from server.api.schemas import (
    PublishedOut,
    SignaturesPublishIn,
    SignaturesRollbackIn,
    SignatureVersionList,
)
from server.collector import Collector
from server.errors import InvalidInput, NotFound
from server.signing import BuiltBundle, build_bundle, check_compiles
from server.store import agents, audit
from server.store import signatures as signature_store
from server.store.sql import iso

router = APIRouter(prefix="/api/v1/signatures", tags=["signatures"])


@router.get(
    "",
    summary="The signed rule bundle for the calling agent (ETag / If-None-Match)",
    responses={200: {"content": {"application/octet-stream": {}}}, 304: {"description": "unchanged"}, 404: {"description": "nothing published yet"}},
)
def get_bundle(
    collector: CollectorDep, token: TokenDep, address: AddressDep, if_none_match: Annotated[str | None, Header(max_length=256)] = None
) -> Response:
    with collector.db.write() as conn:
        identity = agents.authenticate(conn, value=token)
        record_agent_call(conn, collector, identity, address)
        version = signature_store.current_version(conn)
        if version is None:
            raise NotFound("no signatures published yet")
        bundle = _bundle(collector, conn, version, identity.vendor)
    if if_none_match and if_none_match.strip('"') == bundle.etag:
        return Response(status_code=304, headers={"ETag": f'"{bundle.etag}"'})
    return Response(bundle.data, media_type="application/octet-stream", headers={"ETag": f'"{bundle.etag}"', "X-DLP-Bundle-Version": str(version)})


def _bundle(collector: Collector, conn: Any, version: int, vendor: str) -> BuiltBundle:
    key = (version, vendor)
    with collector.bundles_lock:
        cached = collector.bundles.get(key)
    if cached is not None:
        return cached
    if collector.signing_key is None:
        raise NotFound("this collector has no signing key; run dlp-server init")
    row = signature_store.version_info(conn, version=version)
    built = build_bundle(
        version=version,
        vendor=vendor,
        packs=signature_store.packs_for(conn, version=version, vendor=vendor),
        created_by=row["created_by"],
        created_at=row["created_at"],
        key=collector.signing_key,
    )
    with collector.bundles_lock:
        collector.bundles[key] = built
    return built


@router.get("/versions", response_model=SignatureVersionList, summary="Every published version with its packs and how many agents run it")
def list_versions(collector: CollectorDep, user: UserDep) -> dict[str, Any]:
    with collector.db.read() as conn:
        return {"items": signature_store.versions(conn)}


@router.post("", status_code=201, response_model=PublishedOut, summary="Publish packs as a new version (refused unless everything compiles)")
def publish(body: SignaturesPublishIn, collector: CollectorDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    return publish_packs(collector, packs=body.packs, vendors=body.vendors, remove=body.remove, note=body.note, actor=admin.name, address=address)


@router.post("/rollback", status_code=201, response_model=PublishedOut, summary="Publish an earlier version's packs again as a new version")
def rollback(body: SignaturesRollbackIn, collector: CollectorDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    return rollback_to(collector, version=body.version, actor=admin.name, address=address)


def publish_packs(
    collector: Collector, *, packs: dict[str, str], vendors: list[str] | None, remove: list[str], note: str, actor: str, address: str | None
) -> dict[str, Any]:
    """Publish (API and CLI): compile the whole resulting version first; refuse with the compiler's message."""
    if not packs and not remove:
        raise InvalidInput("nothing to publish: give packs or packs to remove")
    now = collector.clock()
    with collector.db.write() as conn:
        version = signature_store.publish(conn, packs=packs, vendors=vendors, remove=remove, created_by=actor, note=note, now=now)
        try:
            rules = check_compiles(signature_store.all_packs(conn, version=version))
        except RuleError as exc:
            raise InvalidInput(f"not published: {exc}") from None  # the transaction rolls back
        details = {"packs": sorted(packs), "removed": sorted(remove), "vendors": vendors, "note": note, "rules": rules}
        audit.append(conn, actor=actor, action="signatures.publish", target=f"version {version}", details=details, address=address, now=now)
    return {"version": version, "rules": rules}


def rollback_to(collector: Collector, *, version: int, actor: str, address: str | None) -> dict[str, Any]:
    now = collector.clock()
    with collector.db.write() as conn:
        new_version = signature_store.rollback(conn, to_version=version, created_by=actor, now=now)
        rules = check_compiles(signature_store.all_packs(conn, version=new_version))
        audit.append(conn, actor=actor, action="signatures.rollback", target=f"version {new_version}", details={"to": version, "at": iso(now)}, address=address, now=now)
    return {"version": new_version, "rules": rules}
