"""Vendors: the outsourcing companies agents belong to, and the office ranges they call from."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from server.db.tables import agents, vendors
from server.errors import Conflict, NotFound
from server.store.scope import Scope
from server.store.sql import iso


def get_or_create(conn: Connection, *, name: str, now: datetime) -> tuple[int, bool]:
    """The vendor's id, creating it on first use; True when created."""
    row = conn.execute(select(vendors.c.id).where(vendors.c.name == name)).first()
    if row:
        return row.id, False
    result = conn.execute(vendors.insert().values(name=name, allowed_cidrs=[], created_at=now))
    key = result.inserted_primary_key
    assert key is not None, "an INSERT of one row has its key"
    return key[0], True


def id_of(conn: Connection, name: str, scope: Scope | None = None) -> int:
    """The vendor's row id; NotFound when there is none, or none that ``scope`` may see."""
    query = select(vendors.c.id).where(vendors.c.name == name)
    visible = None if scope is None else scope.where(vendors.c.id)
    row = conn.execute(query if visible is None else query.where(visible)).first()
    if row is None:
        raise NotFound(f"no vendor {name!r}")
    return int(row.id)


def create(conn: Connection, *, name: str, allowed_cidrs: list[str], now: datetime) -> dict[str, Any]:
    if conn.execute(select(vendors.c.id).where(vendors.c.name == name)).first():
        raise Conflict(f"vendor {name!r} already exists")
    conn.execute(vendors.insert().values(name=name, allowed_cidrs=allowed_cidrs, created_at=now))
    return get(conn, name=name)


def set_ranges(conn: Connection, *, name: str, allowed_cidrs: list[str]) -> dict[str, Any]:
    result = conn.execute(vendors.update().where(vendors.c.name == name).values(allowed_cidrs=allowed_cidrs))
    if result.rowcount == 0:
        raise NotFound(f"no vendor {name!r}")
    return get(conn, name=name)


def get(conn: Connection, *, name: str) -> dict[str, Any]:
    rows = _query(conn, vendors.c.name == name)
    if not rows:
        raise NotFound(f"no vendor {name!r}")
    return rows[0]


def list_all(conn: Connection) -> list[dict[str, Any]]:
    return _query(conn, None)


def list_visible(conn: Connection, *, scope: Scope) -> list[dict[str, Any]]:
    """The vendors ``scope`` may see (a vendor lead: their own), for lists, filters and the overview."""
    return _query(conn, scope.where(vendors.c.id))


def _query(conn: Connection, where: Any) -> list[dict[str, Any]]:
    counts = (
        select(
            agents.c.vendor_id,
            func.count().label("agents"),
            func.count().filter(agents.c.status == "online").label("online"),
        )
        .group_by(agents.c.vendor_id)
        .subquery()
    )
    query = select(vendors, counts.c.agents, counts.c.online).outerjoin(counts, counts.c.vendor_id == vendors.c.id).order_by(vendors.c.name)
    if where is not None:
        query = query.where(where)
    return [
        {
            "name": row.name,
            "allowed_cidrs": list(row.allowed_cidrs or []),
            "created_at": iso(row.created_at),
            "agents": row.agents or 0,
            "agents_online": row.online or 0,
        }
        for row in conn.execute(query)
    ]
