"""Saved views: a reviewer's named filter sets for the event list, kept private or shared.

A view is the list's query string, parsed with the list's own parser (server/ui/filters.py) and
stored in its one canonical spelling, so a saved view opens exactly as the list would show it and
a query the list would refuse is refused here. Everyone sees their own views and the shared ones
within their scope: an unscoped reviewer every shared view, a vendor-scoped reviewer only those
whose owner is scoped to some of its own vendors (a view's query may name another vendor's
hosts, users or files, and an unscoped owner's may name any). Only the owner (or an admin)
deletes a view. Changes are audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import Connection, or_, select

from server.db.tables import saved_views, users
from server.errors import Conflict, InvalidInput, NotFound
from server.store import audit
from server.store.sql import iso
from server.store.users import User
from server.ui import filters

MAX_QUERY = 4000
MAX_VIEWS = 500


def canonical(query: str) -> str:
    """The list's own spelling of ``query`` (filters, sort, page size; never a cursor)."""
    if len(query) > MAX_QUERY:
        raise InvalidInput(f"the view's query is longer than {MAX_QUERY} characters")
    view = filters.parse(dict(parse_qsl(query.lstrip("?"), keep_blank_values=False)))
    if view.problems:
        raise InvalidInput("; ".join(view.problems))
    return view.query()


def _public(row: Any, viewer: User) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "query": row.query,
        "url": "/ui/events" + (f"?{row.query}" if row.query else ""),
        "shared": row.shared,
        "owner": row.owner,
        "mine": row.owner_id == viewer.id,
        "created_at": iso(row.created_at),
    }


def _select() -> Any:
    return select(saved_views, users.c.name.label("owner"), users.c.vendor_ids.label("owner_vendor_ids")).select_from(
        saved_views.join(users, users.c.id == saved_views.c.owner_id)
    )


def _may_see(row: Any, viewer: User) -> bool:
    """The viewer's own view, or a shared one whose owner's scope lies within the viewer's."""
    if row.owner_id == viewer.id:
        return True
    if not row.shared:
        return False
    allowed = viewer.scope.vendor_ids
    if allowed is None:
        return True
    owner = row.owner_vendor_ids
    return owner is not None and {int(v) for v in owner} <= allowed


def create(conn: Connection, *, owner: User, name: str, query: str, shared: bool, address: str | None, now: datetime) -> dict[str, Any]:
    name = name.strip()
    if not name:
        raise InvalidInput("a view needs a name")
    stored = canonical(query)
    if conn.execute(select(saved_views.c.id).where(saved_views.c.owner_id == owner.id, saved_views.c.name == name)).first():
        raise Conflict(f"you already have a view named {name!r}")
    view_id = conn.execute(saved_views.insert().values(owner_id=owner.id, name=name, query=stored, shared=shared, created_at=now).returning(saved_views.c.id)).scalar_one()
    details = {"name": name, "query": stored, "shared": shared}
    audit.append(conn, actor=owner.name, action="view.create", target=f"view:{view_id}", details=details, address=address, now=now)
    return get(conn, view_id=view_id, viewer=owner)


def get(conn: Connection, *, view_id: int, viewer: User) -> dict[str, Any]:
    """One view the viewer may see (theirs or shared); another's private view does not exist for them."""
    row = conn.execute(_select().where(saved_views.c.id == view_id, or_(saved_views.c.owner_id == viewer.id, saved_views.c.shared.is_(True)))).first()
    if row is None or not _may_see(row, viewer):
        raise NotFound(f"no view {view_id}")
    return _public(row, viewer)


def list_for(conn: Connection, *, viewer: User) -> list[dict[str, Any]]:
    """The viewer's own views, then the others' shared ones they may see, each by name."""
    rows = conn.execute(_select().where(or_(saved_views.c.owner_id == viewer.id, saved_views.c.shared.is_(True))).order_by(saved_views.c.name, saved_views.c.id)).all()
    found = [_public(row, viewer) for row in rows if _may_see(row, viewer)][:MAX_VIEWS]
    return [view for view in found if view["mine"]] + [view for view in found if not view["mine"]]


def delete(conn: Connection, *, view_id: int, viewer: User, address: str | None, now: datetime) -> None:
    view = get(conn, view_id=view_id, viewer=viewer)
    if not view["mine"] and not viewer.is_admin:
        raise NotFound(f"no view {view_id} of yours")
    conn.execute(saved_views.delete().where(saved_views.c.id == view_id))
    audit.append(conn, actor=viewer.name, action="view.delete", target=f"view:{view_id}", details={"name": view["name"]}, address=address, now=now)
