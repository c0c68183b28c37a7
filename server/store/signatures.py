"""Published signature versions: publish, roll back, what each vendor gets, who runs what.

A version holds packs (YARA text) and fingerprint indexes (binary, checked before they get
here). Pack and index names share one namespace, the scanner's. An index's bytes are kept
once per content, in chunks, however many versions carry it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from agent.bundle import MAX_INDEXES, MAX_INDEXES_BYTES
from agent.scanning import RuleError
from server.db.tables import agents, signature_blob_chunks, signature_blobs, signature_indexes, signature_packs, signature_versions
from server.errors import InvalidInput, NotFound
from server.signing import check_compiles
from server.store import audit
from server.store.sql import iso

BLOB_CHUNK = 4 << 20
"""Bytes per stored chunk of an index: reads and writes never hold more than this of one."""


@dataclass(frozen=True)
class StagedIndex:
    """A fingerprint index, validated, in a file of its own until it is published."""

    path: str
    sha256: str
    size: int
    info: dict[str, Any]


def current_version(conn: Connection) -> int | None:
    return conn.execute(select(func.max(signature_versions.c.version))).scalar_one()


def _next_version(conn: Connection) -> int:
    # Writers are serialised (BEGIN IMMEDIATE on SQLite; on PostgreSQL the primary key turns a
    # concurrent publish of the same number into an error the admin can retry).
    return (current_version(conn) or 0) + 1


def version_info(conn: Connection, *, version: int) -> dict[str, Any]:
    """Who made ``version`` and when (what a bundle's manifest carries)."""
    row = conn.execute(select(signature_versions.c.created_by, signature_versions.c.created_at).where(signature_versions.c.version == version)).first()
    if row is None:
        raise NotFound(f"no signature version {version}")
    return {"created_by": row.created_by, "created_at": iso(row.created_at)}


def _packs(conn: Connection, version: int) -> dict[str, dict[str, Any]]:
    rows = conn.execute(select(signature_packs).where(signature_packs.c.version == version).order_by(signature_packs.c.name))
    return {row.name: {"body": row.body, "sha256": row.sha256, "vendors": row.vendors} for row in rows}


def _indexes(conn: Connection, version: int) -> dict[str, dict[str, Any]]:
    rows = conn.execute(select(signature_indexes).where(signature_indexes.c.version == version).order_by(signature_indexes.c.name))
    return {row.name: {"sha256": row.sha256, "size": row.size, "vendors": row.vendors, "info": row.info} for row in rows}


def publish(
    conn: Connection,
    *,
    packs: dict[str, str],
    indexes: dict[str, StagedIndex] | None = None,
    vendors: list[str] | None,
    remove: list[str] | None = None,
    created_by: str,
    note: str,
    now: datetime,
) -> int:
    """A new version: the current packs and indexes, with ``packs`` and ``indexes`` added or
    replaced (for ``vendors``, or every vendor when None) and ``remove`` (pack or index names)
    taken out. Compile-checking packs and validating indexes is the caller's job."""
    current = current_version(conn)
    merged = _packs(conn, current) if current else {}
    merged_indexes = _indexes(conn, current) if current else {}
    for name in remove or []:
        if merged.pop(name, None) is None and merged_indexes.pop(name, None) is None:
            raise NotFound(f"no pack or index {name!r} in version {current}")
    scope = sorted(vendors) if vendors else None
    for name, body in packs.items():
        if name in merged_indexes:
            raise InvalidInput(f"{name!r} names a fingerprint index in version {current}; remove it or choose another pack name")
        merged[name] = {"body": body, "sha256": hashlib.sha256(body.encode("utf-8")).hexdigest(), "vendors": scope}
    for name, staged in (indexes or {}).items():
        if name in merged:
            raise InvalidInput(f"{name!r} names a pack; remove it or choose another index name")
        _store_blob(conn, staged, now=now)
        merged_indexes[name] = {"sha256": staged.sha256, "size": staged.size, "vendors": scope, "info": staged.info}
    built_as = [i["info"].get("name") for i in merged_indexes.values()]
    if len(set(built_as)) != len(built_as):
        twice = next(name for name in built_as if built_as.count(name) > 1)
        raise InvalidInput(f"two indexes of the version were built with the name {twice!r} (dlp-signatures fingerprint --name); agents would refuse both")
    if not merged and not merged_indexes:
        raise InvalidInput("a version needs at least one pack or index")
    if len(merged_indexes) > MAX_INDEXES or sum(i["size"] for i in merged_indexes.values()) > MAX_INDEXES_BYTES:
        raise InvalidInput(f"a version holds at most {MAX_INDEXES} indexes of {MAX_INDEXES_BYTES >> 20} MiB together (agents refuse more)")
    return _write_version(conn, merged, merged_indexes, created_by=created_by, note=note, now=now, rollback_of=None)


def publish_checked(
    conn: Connection,
    *,
    packs: dict[str, str],
    indexes: dict[str, StagedIndex] | None = None,
    vendors: list[str] | None,
    remove: list[str] | None = None,
    note: str,
    actor: str,
    address: str | None,
    now: datetime,
) -> tuple[int, int]:
    """``publish``, then compile the whole new version's packs as agents will and audit it as
    ``signatures.publish``, all in the caller's transaction: (version, rule count). A version
    that does not compile raises InvalidInput with the compiler's message, and the caller's
    transaction rolls it back (admins' publishes and the canary packs of server/canaries.py)."""
    version = publish(conn, packs=packs, indexes=indexes, vendors=vendors, remove=remove, created_by=actor, note=note, now=now)
    every = all_packs(conn, version=version)
    try:
        rules = check_compiles(every) if every else 0
    except RuleError as exc:
        raise InvalidInput(f"not published: {exc}") from None
    details: dict[str, Any] = {"packs": sorted(packs), "removed": sorted(remove or []), "vendors": vendors, "note": note, "rules": rules}
    if indexes:
        details["indexes"] = {name: {"sha256": i.sha256, "size": i.size, "fingerprints": i.info.get("fingerprints")} for name, i in sorted(indexes.items())}
    audit.append(conn, actor=actor, action="signatures.publish", target=f"version {version}", details=details, address=address, now=now)
    return version, rules


def rollback(conn: Connection, *, to_version: int, created_by: str, now: datetime) -> int:
    """Publish the packs and indexes of ``to_version`` again, as a new version."""
    old, old_indexes = _packs(conn, to_version), _indexes(conn, to_version)
    if not old and not old_indexes:
        raise NotFound(f"no signature version {to_version}")
    return _write_version(conn, old, old_indexes, created_by=created_by, note=f"rollback to version {to_version}", now=now, rollback_of=to_version)


def _write_version(
    conn: Connection, packs: dict[str, dict[str, Any]], indexes: dict[str, dict[str, Any]], *, created_by: str, note: str, now: datetime, rollback_of: int | None
) -> int:
    version = _next_version(conn)
    conn.execute(signature_versions.insert().values(version=version, created_at=now, created_by=created_by, note=note, rollback_of=rollback_of))
    if packs:
        conn.execute(
            signature_packs.insert(),
            [{"version": version, "name": name, "body": p["body"], "sha256": p["sha256"], "vendors": p["vendors"]} for name, p in sorted(packs.items())],
        )
    if indexes:
        conn.execute(signature_indexes.insert(), [{"version": version, "name": name, **entry} for name, entry in sorted(indexes.items())])
    return version


def _store_blob(conn: Connection, staged: StagedIndex, *, now: datetime) -> None:
    """Keep the index's bytes (once per content), copied from its file a chunk at a time."""
    if conn.execute(select(signature_blobs.c.sha256).where(signature_blobs.c.sha256 == staged.sha256)).first() is not None:
        return
    chunks = -(-staged.size // BLOB_CHUNK)
    conn.execute(signature_blobs.insert().values(sha256=staged.sha256, size=staged.size, chunks=chunks, created_at=now))
    digest = hashlib.sha256()
    with open(staged.path, "rb") as handle:
        for seq in range(chunks):
            data = handle.read(BLOB_CHUNK)
            digest.update(data)
            conn.execute(signature_blob_chunks.insert().values(sha256=staged.sha256, seq=seq, data=data))
        if handle.read(1) or digest.hexdigest() != staged.sha256:
            raise InvalidInput("the index changed on disk while it was published; publish it again")


def blob_chunks(conn: Connection, *, sha256: str) -> Iterator[bytes]:
    """An index's bytes, one stored chunk at a time."""
    row = conn.execute(select(signature_blobs.c.chunks).where(signature_blobs.c.sha256 == sha256)).first()
    if row is None:
        raise NotFound(f"no stored index with hash {sha256}")
    for seq in range(row.chunks):
        yield conn.execute(select(signature_blob_chunks.c.data).where(signature_blob_chunks.c.sha256 == sha256, signature_blob_chunks.c.seq == seq)).scalar_one()


def packs_for(conn: Connection, *, version: int, vendor: str) -> dict[str, str]:
    """The packs of ``version`` an agent of ``vendor`` gets: common ones plus its vendor's."""
    return {name: p["body"] for name, p in _packs(conn, version).items() if p["vendors"] is None or vendor in p["vendors"]}


def indexes_for(conn: Connection, *, version: int, vendor: str) -> dict[str, dict[str, Any]]:
    """The indexes of ``version`` an agent of ``vendor`` gets (``sha256``, ``size``, ``info``)."""
    return {name: i for name, i in _indexes(conn, version).items() if i["vendors"] is None or vendor in i["vendors"]}


def all_packs(conn: Connection, *, version: int) -> dict[str, str]:
    return {name: p["body"] for name, p in _packs(conn, version).items()}


def _index_public(row: Any) -> dict[str, Any]:
    info = row.info or {}
    return {
        "name": row.name,
        "sha256": row.sha256,
        "size": row.size,
        "vendors": row.vendors,
        "index_version": info.get("version"),
        "fingerprints": info.get("fingerprints"),
        "files": info.get("files"),
    }


def versions(conn: Connection) -> list[dict[str, Any]]:
    """Every version, newest first, with its packs and indexes (and their vendors) and how many agents run it."""
    running: dict[int, int] = dict(
        conn.execute(
            select(agents.c.bundle_version, func.count()).where(agents.c.status != "revoked", agents.c.bundle_version.is_not(None)).group_by(agents.c.bundle_version)
        ).all()
    )
    pack_rows = conn.execute(select(signature_packs.c.version, signature_packs.c.name, signature_packs.c.sha256, signature_packs.c.vendors).order_by(signature_packs.c.name)).all()
    by_version: dict[int, list[dict[str, Any]]] = {}
    for row in pack_rows:
        by_version.setdefault(row.version, []).append({"name": row.name, "sha256": row.sha256, "vendors": row.vendors})
    indexes_by_version: dict[int, list[dict[str, Any]]] = {}
    for row in conn.execute(select(signature_indexes).order_by(signature_indexes.c.name)):
        indexes_by_version.setdefault(row.version, []).append(_index_public(row))
    current = current_version(conn)
    return [
        {
            "version": row.version,
            "current": row.version == current,
            "created_at": iso(row.created_at),
            "created_by": row.created_by,
            "note": row.note,
            "rollback_of": row.rollback_of,
            "packs": by_version.get(row.version, []),
            "indexes": indexes_by_version.get(row.version, []),
            "agents": running.get(row.version, 0),
        }
        for row in conn.execute(select(signature_versions).order_by(signature_versions.c.version.desc()))
    ]
