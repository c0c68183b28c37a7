"""People's timelines: one user's, one USB device's or one host's events in order, with their
counts per day, the source addresses they came from and the cases that hold them.

Every read is bounded and index-backed: events by ``(user_name, seq)``, ``(host, seq)`` or
``device_serial`` in keyset pages, counts per day from the stats fold's rollups (server/store/
stats.py, person_days.py) plus the not yet folded events, addresses over the most recent
``RECENT_EVENTS``. These pages are the customer's: vendor leads get none of them (``scope_for``).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, func, select

from server.db.tables import case_events, cases, event_counts, events, vendors
from server.errors import Forbidden, InvalidInput
from server.store import person_days, stats
from server.store.scope import Scope
from server.store.sql import iso
from server.store.users import User

Subject = Literal["user", "device", "host"]
SUBJECTS: tuple[Subject, ...] = ("user", "device", "host")
_COLUMN = {"user": events.c.user_name, "device": events.c.device_serial, "host": events.c.host}
_COUNT_KIND = {"user": "user", "device": "device", "host": person_days.HOST_KIND}
RECENT_EVENTS = 1000
"""Source addresses are read from a subject's most recent events, this many at most."""
MAX_DAYS = 90
MAX_CASES = 50


def scope_for(user: User) -> Scope:
    """What ``user`` may read of people's pages: the customer's reviewers and admins only."""
    if user.is_vendor_lead:
        raise Forbidden("people, timelines, watchlists and saved views are the customer's pages")
    return user.scope


def _visible(scope: Scope) -> list[Any]:
    """What a timeline reads: events of vendor staff, devices and hosts within ``scope``; never the
    collector's own ``access`` events (of no vendor), which concern reviewers' and admins' logins."""
    condition = scope.where(events.c.vendor_id)
    return [events.c.vendor_id.is_not(None)] if condition is None else [condition]


def events_page(conn: Connection, *, scope: Scope, subject: Subject, value: str, limit: int = 100, before: int | None = None) -> dict[str, Any]:
    """One page of the subject's events, newest first (arrival order); ``next`` continues it."""
    query = (
        select(
            events.c.seq,
            events.c.id,
            events.c.occurred_at,
            events.c.channel,
            events.c.type,
            events.c.severity,
            events.c.triage_status,
            events.c.host,
            events.c.user_name,
            events.c.device_serial,
            events.c.path,
            events.c.source_ip,
            events.c.source_country,
            events.c.vendor_id,
            vendors.c.name.label("vendor"),
        )
        .select_from(events.outerjoin(vendors, vendors.c.id == events.c.vendor_id))
        .where(_COLUMN[subject] == value, *_visible(scope))
    )
    if before is not None:
        query = query.where(events.c.seq < before)
    rows = conn.execute(query.order_by(events.c.seq.desc()).limit(limit + 1)).all()
    items = [
        {
            "id": row.id,
            "occurred_at": iso(row.occurred_at),
            "channel": row.channel,
            "type": row.type,
            "severity": row.severity,
            "triage_status": row.triage_status,
            "host": row.host,
            "user": row.user_name,
            "device_serial": row.device_serial,
            "path": row.path,
            "source_ip": row.source_ip,
            "source_country": row.source_country,
            "vendor": row.vendor,
            "vendor_id": row.vendor_id,
        }
        for row in rows[:limit]
    ]
    return {"items": items, "next": str(rows[limit - 1].seq) if len(rows) > limit else None}


def per_day(conn: Connection, *, scope: Scope, subject: Subject, value: str, now: datetime, days: int = 30) -> dict[date, int]:
    """Events per UTC day over the last ``days`` (today included)."""
    days = max(1, min(days, MAX_DAYS))
    first = stats.window_start(now, days)
    last = first + timedelta(days=days - 1)
    visible = scope.where(event_counts.c.vendor_id)
    query = (
        select(event_counts.c.day, func.sum(event_counts.c.count).label("n"))
        .where(event_counts.c.kind == _COUNT_KIND[subject], event_counts.c.day >= first, event_counts.c.day <= last, event_counts.c.key == value)
        .group_by(event_counts.c.day)
    )
    if visible is not None:
        query = query.where(visible)
    counts = {row.day: int(row.n) for row in conn.execute(query)}
    mark = stats.folded_upto(conn, stats.PEOPLE_PROGRESS if subject == "host" else stats.COUNTS_PROGRESS)
    day = stats._day(conn)
    tail = select(day.label("day"), func.count().label("n")).where(_COLUMN[subject] == value, events.c.seq > mark, *_visible(scope)).group_by(day)
    for row in conn.execute(tail):
        when = date.fromisoformat(row.day)
        if first <= when <= last:
            counts[when] = counts.get(when, 0) + row.n
    return counts


def addresses(conn: Connection, *, scope: Scope, subject: Subject, value: str) -> list[dict[str, Any]]:
    """The source addresses of the subject's ``RECENT_EVENTS`` newest events, most used first."""
    recent = (
        select(events.c.source_ip, events.c.source_country, events.c.occurred_at)
        .where(_COLUMN[subject] == value, events.c.source_ip.is_not(None), *_visible(scope))
        .order_by(events.c.seq.desc())
        .limit(RECENT_EVENTS)
        .subquery()
    )
    query = select(recent.c.source_ip, recent.c.source_country, func.count().label("n"), func.min(recent.c.occurred_at).label("first"), func.max(recent.c.occurred_at).label("last")).group_by(
        recent.c.source_ip, recent.c.source_country
    )
    rows = sorted(conn.execute(query), key=lambda row: (-row.n, row.source_ip))
    return [{"address": row.source_ip, "country": row.source_country, "events": row.n, "first_seen": iso(row.first), "last_seen": iso(row.last)} for row in rows]


def case_links(conn: Connection, *, scope: Scope, subject: Subject, value: str) -> list[dict[str, Any]]:
    """The cases holding the subject's events (only events ``scope`` may see count), latest changed first."""
    query = (
        select(cases.c.id, cases.c.title, cases.c.status, cases.c.updated_at, func.count().label("n"))
        .select_from(case_events.join(events, events.c.seq == case_events.c.event_seq).join(cases, cases.c.id == case_events.c.case_id))
        .where(_COLUMN[subject] == value, *_visible(scope))
        .group_by(cases.c.id, cases.c.title, cases.c.status, cases.c.updated_at)
        .order_by(cases.c.updated_at.desc(), cases.c.id.desc())
        .limit(MAX_CASES)
    )
    return [{"id": row.id, "title": row.title, "status": row.status, "events": row.n} for row in conn.execute(query)]


def parse_cursor(text: str | None) -> int | None:
    if not text:
        return None
    if not text.isdigit() or len(text) > 19:
        raise InvalidInput("cursor is not one this collector returned")
    return int(text)
