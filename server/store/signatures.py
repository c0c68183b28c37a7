"""Published signature versions: publish, roll back, what each vendor gets, who runs what."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from server.db.tables import agents, signature_packs, signature_versions
from server.errors import InvalidInput, NotFound
from server.store.sql import iso


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


def publish(
    conn: Connection, *, packs: dict[str, str], vendors: list[str] | None, remove: list[str] | None = None, created_by: str, note: str, now: datetime
) -> int:
    """A new version: the current packs, with ``packs`` added or replaced (for ``vendors``, or
    every vendor when None) and ``remove`` taken out. Compile-checking is the caller's job."""
    current = current_version(conn)
    merged = _packs(conn, current) if current else {}
    for name in remove or []:
        if merged.pop(name, None) is None:
            raise NotFound(f"no pack {name!r} in version {current}")
    for name, body in packs.items():
        merged[name] = {"body": body, "sha256": hashlib.sha256(body.encode("utf-8")).hexdigest(), "vendors": sorted(vendors) if vendors else None}
    if not merged:
        raise InvalidInput("a version needs at least one pack")
    return _write_version(conn, merged, created_by=created_by, note=note, now=now, rollback_of=None)


def rollback(conn: Connection, *, to_version: int, created_by: str, now: datetime) -> int:
    """Publish the packs of ``to_version`` again, as a new version."""
    old = _packs(conn, to_version)
    if not old:
        raise NotFound(f"no signature version {to_version}")
    return _write_version(conn, old, created_by=created_by, note=f"rollback to version {to_version}", now=now, rollback_of=to_version)


def _write_version(conn: Connection, packs: dict[str, dict[str, Any]], *, created_by: str, note: str, now: datetime, rollback_of: int | None) -> int:
    version = _next_version(conn)
    conn.execute(signature_versions.insert().values(version=version, created_at=now, created_by=created_by, note=note, rollback_of=rollback_of))
    conn.execute(
        signature_packs.insert(),
        [{"version": version, "name": name, "body": p["body"], "sha256": p["sha256"], "vendors": p["vendors"]} for name, p in sorted(packs.items())],
    )
    return version


def packs_for(conn: Connection, *, version: int, vendor: str) -> dict[str, str]:
    """The packs of ``version`` an agent of ``vendor`` gets: common ones plus its vendor's."""
    return {name: p["body"] for name, p in _packs(conn, version).items() if p["vendors"] is None or vendor in p["vendors"]}


def all_packs(conn: Connection, *, version: int) -> dict[str, str]:
    return {name: p["body"] for name, p in _packs(conn, version).items()}


def versions(conn: Connection) -> list[dict[str, Any]]:
    """Every version, newest first, with its packs (and their vendors) and how many agents run it."""
    running: dict[int, int] = dict(
        conn.execute(
            select(agents.c.bundle_version, func.count()).where(agents.c.status != "revoked", agents.c.bundle_version.is_not(None)).group_by(agents.c.bundle_version)
        ).all()
    )
    pack_rows = conn.execute(select(signature_packs.c.version, signature_packs.c.name, signature_packs.c.sha256, signature_packs.c.vendors).order_by(signature_packs.c.name)).all()
    by_version: dict[int, list[dict[str, Any]]] = {}
    for row in pack_rows:
        by_version.setdefault(row.version, []).append({"name": row.name, "sha256": row.sha256, "vendors": row.vendors})
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
            "agents": running.get(row.version, 0),
        }
        for row in conn.execute(select(signature_versions).order_by(signature_versions.c.version.desc()))
    ]
