"""The people API: per-user risk, timelines of a user, device or host, watchlists and saved views.

Routes stay thin: ``people.scope_for`` refuses vendor leads and gives everyone else their scope,
and the store functions apply it in SQL.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from sqlalchemy import Connection
from starlette.responses import Response

from server.api.deps import AddressDep, CollectorDep, UserDep
from server.api.people_schemas import PeopleList, Person, Timeline, ViewIn, ViewList, ViewPublic, WatchlistEntry, WatchlistIn, WatchlistList
from server.collector import Collector
from server.errors import InvalidInput
from server.store import people, risk, views, watchlist
from server.store.people import Subject
from server.store.scope import Scope

router = APIRouter(prefix="/api/v1", tags=["people"])
_Value = Annotated[str | None, Query(max_length=255)]
_Cursor = Annotated[str | None, Query(max_length=19, pattern=r"^[0-9]+$")]
_Limit = Annotated[int, Query(ge=1, le=500)]
_Days = Annotated[int, Query(ge=1, le=people.MAX_DAYS)]
PEOPLE_SORTS = ("risk", "events", "name")


def timeline(conn: Connection, collector: Collector, *, scope: Scope, subject: Subject, value: str, limit: int, cursor: str | None, days: int) -> dict[str, Any]:
    """Everything a timeline shows, for the API and the page alike."""
    now = collector.clock()
    found = people.events_page(conn, scope=scope, subject=subject, value=value, limit=limit, before=people.parse_cursor(cursor))
    marked = watchlist.watched(conn, now=now)
    for item in found["items"]:
        item["watched"] = watchlist.is_watched(marked, item["vendor_id"], item["user"])
    counts = people.per_day(conn, scope=scope, subject=subject, value=value, now=now, days=days)
    first = now.date() - timedelta(days=days - 1)
    calendar = [first + timedelta(days=n) for n in range(days)]
    return {
        "subject": subject,
        "value": value,
        **found,
        "per_day": [{"day": day.isoformat(), "events": counts.get(day, 0)} for day in calendar],
        "per_day_dates": calendar,
        "addresses": people.addresses(conn, scope=scope, subject=subject, value=value),
        "cases": people.case_links(conn, scope=scope, subject=subject, value=value),
    }


def watched_names(conn: Connection, *, scope: Scope, now: Any) -> set[str]:
    """User names with an entry in force that ``scope`` may see."""
    return {entry["user"] for entry in watchlist.list_entries(conn, scope=scope, now=now)}


def people_list(conn: Connection, collector: Collector, *, scope: Scope, sort: str, limit: int) -> list[dict[str, Any]]:
    now = collector.clock()
    ranked = [risk.as_dict(found) for found in risk.scores(conn, scope=scope, now=now, config=collector.settings.people)]
    names = watched_names(conn, scope=scope, now=now)
    for item in ranked:
        item["watched"] = item["user"] in names
    if sort == "events":
        ranked.sort(key=lambda item: (-item["events"], item["user"]))
    elif sort == "name":
        ranked.sort(key=lambda item: item["user"])
    return ranked[:limit]


@router.get("/people", response_model=PeopleList, summary="Users with events in the risk window, highest risk first")
def list_people(collector: CollectorDep, user: UserDep, sort: Annotated[str, Query(pattern="^(risk|events|name)$")] = "risk", limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> dict[str, Any]:
    scope = people.scope_for(user)
    with collector.db.read() as conn:
        items = people_list(conn, collector, scope=scope, sort=sort, limit=limit)
    return {"items": items, "days": collector.settings.people.risk_days}


@router.get("/people/{name}", response_model=Person, summary="One user: risk with its factors, watchlist entries and timeline")
def get_person(collector: CollectorDep, user: UserDep, name: Annotated[str, Path(max_length=255)], limit: _Limit = 100, cursor: _Cursor = None, days: _Days = 30) -> dict[str, Any]:
    scope = people.scope_for(user)
    now = collector.clock()
    with collector.db.read() as conn:
        found = risk.scores(conn, scope=scope, now=now, config=collector.settings.people, user_name=name)
        entries = watchlist.list_entries(conn, scope=scope, now=now, user_name=name)
        line = timeline(conn, collector, scope=scope, subject="user", value=name, limit=limit, cursor=cursor, days=days)
    scored = {**risk.as_dict(found[0]), "watched": bool(entries)} if found else None
    return {"user": name, "risk": scored, "watchlist": entries, "timeline": line}


@router.get("/timeline", response_model=Timeline, summary="A user's, USB device's or host's events newest first, counts per day, addresses, cases")
def get_timeline(
    collector: CollectorDep,
    user: UserDep,
    user_name: Annotated[str | None, Query(alias="user", max_length=255)] = None,
    device: _Value = None,
    host: _Value = None,
    limit: _Limit = 100,
    cursor: _Cursor = None,
    days: _Days = 30,
) -> dict[str, Any]:
    scope = people.scope_for(user)
    given = [(subject, value) for subject, value in (("user", user_name), ("device", device), ("host", host)) if value]
    if len(given) != 1:
        raise InvalidInput("give exactly one of user, device or host")
    subject, value = given[0]
    with collector.db.read() as conn:
        return timeline(conn, collector, scope=scope, subject=subject, value=value, limit=limit, cursor=cursor, days=days)  # type: ignore[arg-type]


@router.get("/watchlist", response_model=WatchlistList, summary="Watchlist entries (expired ones with include_expired)")
def list_watchlist(collector: CollectorDep, user: UserDep, include_expired: bool = False) -> dict[str, Any]:
    scope = people.scope_for(user)
    with collector.db.read() as conn:
        return {"items": watchlist.list_entries(conn, scope=scope, now=collector.clock(), include_expired=include_expired)}


@router.post("/watchlist", response_model=WatchlistEntry, status_code=201, summary="Put a user on the watchlist (audited)")
def add_watch(collector: CollectorDep, user: UserDep, address: AddressDep, body: WatchlistIn) -> dict[str, Any]:
    scope = people.scope_for(user)
    with collector.db.write() as conn:
        return watchlist.add(
            conn, user_name=body.user, vendor=body.vendor, reason=body.reason, expires_at=body.expires_at, scope=scope, actor=user.name,
            address=address, now=collector.clock(),
        )  # fmt: skip


@router.delete("/watchlist/{entry_id}", status_code=204, summary="Take an entry off the watchlist (audited)")
def remove_watch(collector: CollectorDep, user: UserDep, address: AddressDep, entry_id: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> Response:
    scope = people.scope_for(user)
    with collector.db.write() as conn:
        watchlist.remove(conn, entry_id=entry_id, scope=scope, actor=user.name, address=address, now=collector.clock())
    return Response(status_code=204)


@router.get("/views", response_model=ViewList, summary="Your saved views of the event list and everyone's shared ones")
def list_views(collector: CollectorDep, user: UserDep) -> dict[str, Any]:
    people.scope_for(user)
    with collector.db.read() as conn:
        return {"items": views.list_for(conn, viewer=user)}


@router.post("/views", response_model=ViewPublic, status_code=201, summary="Save a view of the event list (its query string), private or shared")
def create_view(collector: CollectorDep, user: UserDep, address: AddressDep, body: ViewIn) -> dict[str, Any]:
    people.scope_for(user)
    with collector.db.write() as conn:
        return views.create(conn, owner=user, name=body.name, query=body.query, shared=body.shared, address=address, now=collector.clock())


@router.delete("/views/{view_id}", status_code=204, summary="Delete one of your saved views (audited)")
def delete_view(collector: CollectorDep, user: UserDep, address: AddressDep, view_id: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> Response:
    people.scope_for(user)
    with collector.db.write() as conn:
        views.delete(conn, view_id=view_id, viewer=user, address=address, now=collector.clock())
    return Response(status_code=204)
