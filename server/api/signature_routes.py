"""Signatures: agents fetch their signed bundle; admins publish and roll back; everyone sees rollout."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from agent.bundle import MAX_INDEX_BYTES, PACK_NAME
from agent.scanning import RuleError
from server.api.agent_routes import record_agent_call
from server.api.deps import AddressDep, AdminDep, CollectorDep, TokenDep, UserDep
from server.api.schemas import (
    Name,
    PublishedOut,
    SignaturesPublishIn,
    SignaturesRollbackIn,
    Text,
)
from server.api.signature_schemas import IndexPublishedOut, SignatureVersionList
from server.collector import Collector
from server.errors import Forbidden, InvalidInput, NotFound, TooLarge
from server.signing import BuiltBundle, IndexSource, build_bundle, check_compiles, check_index_file, write_bundle
from server.store import agents, audit
from server.store import signatures as signature_store
from server.store.signatures import StagedIndex
from server.store.sql import iso

router = APIRouter(prefix="/api/v1/signatures", tags=["signatures"])
INDEX_UPLOAD_PATH = "/api/v1/signatures/indexes"
_STAGE_CHUNK = 1 << 20
BUILD_WAIT_S = 10.0
"""How long an agent's fetch waits for a bundle being built before it is told to come back."""
BUILD_RETRY_S = 15
_building = threading.Lock()
_builders: dict[tuple[str, int, str], threading.Thread] = {}
"""The thread building each bundle with indexes (at most one per version and vendor in a process)."""
log = logging.getLogger(__name__)


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
    bundle = _bundle(collector, version, identity.vendor)
    if bundle is None:
        detail = f"the bundle of version {version} is being built; retry in {BUILD_RETRY_S} s"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": str(BUILD_RETRY_S)})
    headers = {"ETag": f'"{bundle.etag}"', "X-DLP-Bundle-Version": str(version)}
    if if_none_match and if_none_match.strip('"') == bundle.etag:
        return Response(status_code=304, headers={"ETag": headers["ETag"]})
    if bundle.path is not None:
        return FileResponse(bundle.path, media_type="application/octet-stream", headers=headers)
    return Response(bundle.data, media_type="application/octet-stream", headers=headers)


def _bundle(collector: Collector, version: int, vendor: str) -> BuiltBundle | None:
    """The bundle of ``version`` for ``vendor``, built once per process: in memory for packs alone,
    in a file under the data directory when it carries indexes. Such a build takes seconds (gzip of
    hundreds of megabytes), so it runs on a thread of its own and a caller waits ``BUILD_WAIT_S`` at
    most; None: still building (the agent is told to come back)."""
    key = (version, vendor)
    builder_key = (str(collector.settings.data_dir), version, vendor)
    with collector.bundles_lock:
        cached = collector.bundles.get(key)
    if cached is not None and (cached.path is None or os.path.exists(cached.path)):
        return cached
    if collector.signing_key is None:
        raise NotFound("this collector has no signing key; run dlp-server init")
    with collector.db.read() as conn:
        row = signature_store.version_info(conn, version=version)
        packs = signature_store.packs_for(conn, version=version, vendor=vendor)
        indexes = signature_store.indexes_for(conn, version=version, vendor=vendor)
    meta = {"version": version, "vendor": vendor, "packs": packs, "created_by": row["created_by"], "created_at": row["created_at"], "key": collector.signing_key}
    if not indexes:
        built = build_bundle(**meta)
        with collector.bundles_lock:
            collector.bundles[key] = built
        return built
    with _building:
        builder = _builders.get(builder_key)
        if builder is None or not builder.is_alive():
            builder = threading.Thread(target=_build_on_disk, args=(collector, meta, indexes), name=f"bundle-{version}", daemon=True)
            _builders[builder_key] = builder
            builder.start()
    builder.join(BUILD_WAIT_S)
    with collector.bundles_lock:
        return collector.bundles.get(key)


def _build_on_disk(collector: Collector, meta: dict[str, Any], indexes: dict[str, dict[str, Any]]) -> None:
    """Build (or find, from a process before) the bundle file, and cache it; runs on its own thread."""
    try:
        built = _bundle_file(collector, meta, indexes)
    except Exception:
        log.exception("cannot build the bundle of version %s for %s", meta["version"], meta["vendor"])
        return
    with collector.bundles_lock:
        collector.bundles[(meta["version"], meta["vendor"])] = built


def _bundle_file(collector: Collector, meta: dict[str, Any], indexes: dict[str, dict[str, Any]]) -> BuiltBundle:
    directory = Path(collector.settings.data_dir) / "bundles"
    # The signing key is in the name too: a bundle signed with a replaced key is never served.
    scope = hashlib.sha256(f"{meta['vendor']}\0{collector.signing_public_key}".encode()).hexdigest()[:16]
    final = directory / f"v{meta['version']}-{scope}.tar.gz"
    if final.exists():  # built by this process before a restart, or by another worker on this host
        return BuiltBundle(b"", _etag_of(final), path=str(final), size=final.stat().st_size)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in directory.glob(f"v*-{scope}.tar.gz"):
        stale.unlink(missing_ok=True)  # this vendor's earlier versions: agents no longer fetch them
    with collector.db.read() as conn, tempfile.NamedTemporaryFile(dir=directory, prefix=".build-", delete=False) as out:
        sources = [IndexSource(name, i["sha256"], i["size"], _chunks_of(conn, i["sha256"])) for name, i in indexes.items()]
        try:
            etag = write_bundle(out, indexes=sources, **meta)
        except BaseException:
            os.unlink(out.name)
            raise
    os.replace(out.name, final)
    return BuiltBundle(b"", etag, path=str(final), size=final.stat().st_size)


def _chunks_of(conn: Any, sha256: str) -> Any:
    return lambda: signature_store.blob_chunks(conn, sha256=sha256)


def _etag_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_STAGE_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()[:32]


@router.get(
    "/versions",
    response_model=SignatureVersionList,
    summary="Every published version with its packs, indexes and how many agents run it (admins and unscoped reviewers)",
)
def list_versions(collector: CollectorDep, user: UserDep) -> dict[str, Any]:
    """Refused to scoped accounts: a version names every vendor's packs and counts the whole fleet's agents."""
    if not user.scope.unrestricted:
        raise Forbidden("signature versions cover every vendor; this account is scoped to some")
    with collector.db.read() as conn:
        return {"items": signature_store.versions(conn)}


@router.post("", status_code=201, response_model=PublishedOut, summary="Publish packs as a new version (refused unless everything compiles)")
def publish(body: SignaturesPublishIn, collector: CollectorDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    return publish_packs(collector, packs=body.packs, vendors=body.vendors, remove=body.remove, note=body.note, actor=admin.name, address=address)


@router.post(
    "/indexes",
    status_code=201,
    response_model=IndexPublishedOut,
    summary="Publish one fingerprint index (the raw .fp file as the body) as a new version",
    openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def publish_index(
    request: Request,
    collector: CollectorDep,
    admin: AdminDep,
    address: AddressDep,
    name: Annotated[str, Query(pattern=PACK_NAME.pattern, description="the index's name in bundles (its file name without .fp)")],
    vendor: Annotated[list[Name] | None, Query(max_length=1000, description="only these vendors' agents get it (repeatable)")] = None,
    note: Annotated[Text, Query(max_length=1000, description="why, for the version list and the audit log")] = "",
) -> dict[str, Any]:
    scratch = _scratch_dir(collector)
    try:
        target = os.path.join(scratch, f"{name}.fp")
        sha256, size = await _receive(request.stream(), target)
        return await _in_thread(collector, name, target, sha256, size, vendor, note, admin.name, address)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


async def _receive(stream: AsyncIterator[bytes], target: str) -> tuple[str, int]:
    """Write the request body to ``target``, hashing it; more than an index may be is refused.

    The body arrives in small pieces; they are gathered to a megabyte and written off the event loop."""
    from anyio import to_thread

    digest, size, pending = hashlib.sha256(), 0, bytearray()
    with open(target, "wb") as out:
        async for chunk in stream:
            size += len(chunk)
            if size > MAX_INDEX_BYTES:
                raise TooLarge(f"a fingerprint index may be at most {MAX_INDEX_BYTES} bytes")
            pending += chunk
            if len(pending) >= _STAGE_CHUNK:
                block, pending = bytes(pending), bytearray()
                digest.update(block)
                await to_thread.run_sync(out.write, block)
        digest.update(pending)
        await to_thread.run_sync(out.write, bytes(pending))
    return digest.hexdigest(), size


async def _in_thread(collector: Collector, name: str, path: str, sha256: str, size: int, vendors: list[str] | None, note: str, actor: str, address: str | None) -> dict[str, Any]:
    from anyio import to_thread

    def publish_it() -> dict[str, Any]:
        staged = _check(name, path, sha256, size)
        return publish_packs(collector, packs={}, indexes={name: staged}, vendors=vendors or None, remove=[], note=note, actor=actor, address=address)

    return await to_thread.run_sync(publish_it)


@router.post("/rollback", status_code=201, response_model=PublishedOut, summary="Publish an earlier version's packs and indexes again as a new version")
def rollback(body: SignaturesRollbackIn, collector: CollectorDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    return rollback_to(collector, version=body.version, actor=admin.name, address=address)


def _scratch_dir(collector: Collector) -> str:
    """Where uploaded indexes wait while they are checked: the data directory, not a RAM-backed /tmp."""
    parent = Path(collector.settings.data_dir) / "staging"
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix="index-", dir=parent)


def _check(name: str, path: str, sha256: str, size: int) -> StagedIndex:
    try:
        info = check_index_file(path, name=name)
    except RuleError as exc:
        raise InvalidInput(f"not published: {exc}") from None
    return StagedIndex(path=path, sha256=sha256, size=size, info=info)


@contextmanager
def staged_index_files(collector: Collector, files: Iterable[tuple[str, str]]) -> Iterator[dict[str, StagedIndex]]:
    """Check index files on disk (name, path) for publishing (the CLI's way in); each is copied
    to the staging area first, so what is checked is what is stored."""
    scratch = _scratch_dir(collector)
    try:
        staged: dict[str, StagedIndex] = {}
        for name, source in files:
            target = os.path.join(scratch, f"{name}.fp")
            digest, size = hashlib.sha256(), 0
            with open(source, "rb") as handle, open(target, "wb") as out:
                for block in iter(lambda: handle.read(_STAGE_CHUNK), b""):
                    size += len(block)
                    if size > MAX_INDEX_BYTES:
                        raise InvalidInput(f"not published: {os.path.basename(source)} is larger than {MAX_INDEX_BYTES} bytes, the most agents take")
                    digest.update(block)
                    out.write(block)
            staged[name] = _check(name, target, digest.hexdigest(), size)
        yield staged
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def publish_packs(
    collector: Collector,
    *,
    packs: dict[str, str],
    indexes: dict[str, StagedIndex] | None = None,
    vendors: list[str] | None,
    remove: list[str],
    note: str,
    actor: str,
    address: str | None,
) -> dict[str, Any]:
    """Publish (API, CLI and UI): compile the whole resulting version's packs first and refuse with
    the compiler's message; ``indexes`` have been validated already (``staged_index_files``)."""
    indexes = indexes or {}
    if not packs and not indexes and not remove:
        raise InvalidInput("nothing to publish: give packs, indexes or names to remove")
    now = collector.clock()
    with collector.db.write() as conn:
        version, rules = signature_store.publish_checked(conn, packs=packs, indexes=indexes, vendors=vendors, remove=remove, note=note, actor=actor, address=address, now=now)
    result: dict[str, Any] = {"version": version, "rules": rules}
    if indexes:
        result["indexes"] = {name: i.info for name, i in sorted(indexes.items())}
    return result


def rollback_to(collector: Collector, *, version: int, actor: str, address: str | None) -> dict[str, Any]:
    now = collector.clock()
    with collector.db.write() as conn:
        new_version = signature_store.rollback(conn, to_version=version, created_by=actor, now=now)
        all_packs = signature_store.all_packs(conn, version=new_version)
        rules = check_compiles(all_packs) if all_packs else 0
        audit.append(conn, actor=actor, action="signatures.rollback", target=f"version {new_version}", details={"to": version, "at": iso(now)}, address=address, now=now)
    return {"version": new_version, "rules": rules}
