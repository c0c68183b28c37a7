"""Watchlists: staff whose events reviewers follow closely (a contract ending, an earlier incident).

An entry names a user, optionally of one vendor (None: that name at any vendor), with a reason and
an optional expiry. Watchlisted users' events are badged in the lists and alert from a lower
severity (``alerts.watchlist_min_severity``, decided at ingest). Lists of hundreds of events ask
"is this one watched?" per row, so ``watched`` serves a per-process copy refreshed every few
seconds: collectors sharing a database agree within ``CACHE_SECONDS``; this process's own changes
show at once. Every change is audited in the same transaction.
"""

from __future__ import annotations

import threading
import time
import weakref
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, or_, select

from server.db.tables import vendors, watchlist
from server.errors import InvalidInput, NotFound
from server.store import audit
from server.store.scope import Scope
from server.store.sql import iso

CACHE_SECONDS = 5.0
MAX_ENTRIES = 10_000
_lock = threading.Lock()
# Per engine (one per collector process and database), so a test's fresh database never sees another's entries.
_cache: weakref.WeakKeyDictionary[Engine, tuple[float, list[tuple[int | None, str, datetime | None]]]] = weakref.WeakKeyDictionary()

Watched = set[tuple[int | None, str]]


def _forget(conn: Connection) -> None:
    with _lock:
        _cache.pop(conn.engine, None)


def watched(conn: Connection, *, now: datetime) -> Watched:
    """``{(vendor_id or None, user_name)}`` of the entries in force at ``now``."""
    with _lock:
        cached = _cache.get(conn.engine)
    if cached is None or time.monotonic() - cached[0] > CACHE_SECONDS:
        rows = conn.execute(select(watchlist.c.vendor_id, watchlist.c.user_name, watchlist.c.expires_at).limit(MAX_ENTRIES)).all()
        cached = (time.monotonic(), [(row.vendor_id, row.user_name, row.expires_at) for row in rows])
        with _lock:
            _cache[conn.engine] = cached
    return {(vendor_id, name) for vendor_id, name, expires in cached[1] if expires is None or expires > now}


def is_watched(found: Watched, vendor_id: int | None, user_name: str | None) -> bool:
    return user_name is not None and ((None, user_name) in found or (vendor_id is not None and (vendor_id, user_name) in found))


def add(
    conn: Connection,
    *,
    user_name: str,
    vendor: str | None,
    reason: str,
    expires_at: datetime | None,
    scope: Scope,
    actor: str,
    address: str | None,
    now: datetime,
) -> dict[str, Any]:
    """Put ``user_name`` (of ``vendor``, or of any vendor) on the watchlist.

    A reviewer scoped to some vendors must name one of them: "any vendor" reaches beyond their scope.
    """
    vendor_id = None
    if vendor:
        vendor_id = conn.execute(select(vendors.c.id).where(vendors.c.name == vendor)).scalar()
        if vendor_id is None or not scope.allows(vendor_id):
            raise NotFound(f"no vendor {vendor!r}")
    elif not scope.unrestricted:
        raise InvalidInput("name one of your vendors: an entry for any vendor reaches beyond them")
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("expires_at is in the past")
    entry_id = conn.execute(
        watchlist.insert().values(user_name=user_name, vendor_id=vendor_id, reason=reason, added_by=actor, added_at=now, expires_at=expires_at).returning(watchlist.c.id)
    ).scalar_one()
    details = {"user": user_name, "vendor": vendor, "reason": reason, "expires_at": iso(expires_at)}
    audit.append(conn, actor=actor, action="watchlist.add", target=f"watchlist:{entry_id}", details=details, address=address, now=now)
    _forget(conn)
    return get(conn, entry_id=entry_id, scope=scope, now=now)


def remove(conn: Connection, *, entry_id: int, scope: Scope, actor: str, address: str | None, now: datetime) -> None:
    entry = get(conn, entry_id=entry_id, scope=scope, now=now)
    conn.execute(watchlist.delete().where(watchlist.c.id == entry_id))
    details = {"user": entry["user"], "vendor": entry["vendor"]}
    audit.append(conn, actor=actor, action="watchlist.remove", target=f"watchlist:{entry_id}", details=details, address=address, now=now)
    _forget(conn)


def _query(scope: Scope) -> Any:
    query = select(watchlist, vendors.c.name.label("vendor")).select_from(watchlist.outerjoin(vendors, vendors.c.id == watchlist.c.vendor_id))
    visible = scope.where(watchlist.c.vendor_id)
    return query if visible is None else query.where(visible)


def _public(row: Any, now: datetime) -> dict[str, Any]:
    return {
        "id": row.id,
        "user": row.user_name,
        "vendor": row.vendor,
        "reason": row.reason,
        "added_by": row.added_by,
        "added_at": iso(row.added_at),
        "expires_at": iso(row.expires_at),
        "active": row.expires_at is None or row.expires_at > now,
    }


def get(conn: Connection, *, entry_id: int, scope: Scope, now: datetime) -> dict[str, Any]:
    row = conn.execute(_query(scope).where(watchlist.c.id == entry_id)).first()
    if row is None:
        raise NotFound(f"no watchlist entry {entry_id}")
    return _public(row, now)


def list_entries(conn: Connection, *, scope: Scope, now: datetime, user_name: str | None = None, include_expired: bool = False, limit: int = 1000) -> list[dict[str, Any]]:
    """The entries ``scope`` may see, newest first; expired ones only when asked for."""
    query = _query(scope)
    if user_name is not None:
        query = query.where(watchlist.c.user_name == user_name)
    if not include_expired:
        query = query.where(or_(watchlist.c.expires_at.is_(None), watchlist.c.expires_at > now))
    rows = conn.execute(query.order_by(watchlist.c.id.desc()).limit(limit)).all()
    return [_public(row, now) for row in rows]
