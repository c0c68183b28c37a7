"""People pages: users by risk, a user's, device's or host's timeline, the watchlist, and saved views.

Thin over the same functions as the API (server/api/people_routes.py): ``people.scope_for`` refuses
vendor leads, the store applies the scope. Saving a view is posted from the event list.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import ValidationError
from sqlalchemy import Connection, select
from starlette.responses import Response

from server.api.deps import AddressDep, CollectorDep
from server.api.people_routes import people_list, timeline
from server.api.people_schemas import ViewIn, WatchlistIn
from server.db.tables import vendors as vendor_table
from server.errors import InvalidInput
from server.store import people, risk, views, watchlist
from server.store.people import SUBJECTS
from server.store.users import User
from server.ui import filters
from server.ui.charts import stacked_days
from server.ui.render import UiRoute, redirect, render
from server.ui.session import PosterDep, ViewerDep

router = APIRouter(prefix="/ui", route_class=UiRoute, include_in_schema=False)
_Text = Annotated[str | None, Query(max_length=255)]
_Days = Annotated[int, Query(ge=1, le=people.MAX_DAYS)]
SUBJECT_TITLES = {"user": "User", "device": "USB device", "host": "Host"}
NOTICES = {"watched": "Added to the watchlist.", "unwatched": "Taken off the watchlist."}


def _problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid"))


@router.get("/people")
def people_page(request: Request, collector: CollectorDep, viewer: ViewerDep, sort: Annotated[str, Query(pattern="^(risk|events|name)$")] = "risk") -> Response:
    scope = people.scope_for(viewer.user)
    with collector.db.read() as conn:
        items = people_list(conn, collector, scope=scope, sort=sort, limit=500)
    context = {"items": items, "sort": sort, "days": collector.settings.people.risk_days, "factors": risk.FACTORS}
    return render(request, "people.html", context)


@router.get("/timeline")
def timeline_page(
    request: Request,
    collector: CollectorDep,
    viewer: ViewerDep,
    user: _Text = None,
    device: _Text = None,
    host: _Text = None,
    cursor: Annotated[str | None, Query(max_length=19, pattern=r"^[0-9]+$")] = None,
    days: _Days = 30,
) -> Response:
    scope = people.scope_for(viewer.user)
    given = [(subject, value) for subject, value in zip(SUBJECTS, (user, device, host)) if value]
    if len(given) != 1:
        raise InvalidInput("A timeline is of one user, one USB device or one host: give exactly one of user, device or host.")
    subject, value = given[0]
    now = collector.clock()
    with collector.db.read() as conn:
        line = timeline(conn, collector, scope=scope, subject=subject, value=value, limit=100, cursor=cursor, days=days)
        scored = risk.scores(conn, scope=scope, now=now, config=collector.settings.people, user_name=value) if subject == "user" else []
        entries = watchlist.list_entries(conn, scope=scope, now=now, user_name=value) if subject == "user" else []
    chart = stacked_days(line["per_day_dates"], {day["day_date"]: {"none": day["events"]} for day in _dated(line["per_day"]) if day["events"]})
    context = {
        "line": line,
        "subject": subject,
        "title": SUBJECT_TITLES[subject],
        "value": value,
        "chart": chart,
        "days": days,
        "paged": cursor is not None,
        "risk": scored[0] if scored else None,
        "entries": entries,
        "notice": NOTICES.get(request.query_params.get("notice", "")),
        "vendors": sorted({item["vendor"] for item in line["items"] if item["vendor"]}),
    }
    return render(request, "timeline.html", context)


def list_extras(conn: Connection, viewer: User, *, now: datetime) -> dict[str, Any]:
    """What the event list and event page show of people: ``watched`` as ``{(vendor name or None,
    user)}`` for the badges, and the viewer's saved views (neither for vendor leads)."""
    if viewer.is_vendor_lead:
        return {"watched": set(), "saved_views": None}
    names = dict(conn.execute(select(vendor_table.c.id, vendor_table.c.name)).all())
    watched = {(names.get(vendor_id) if vendor_id is not None else None, user) for vendor_id, user in watchlist.watched(conn, now=now)}
    return {"watched": watched, "saved_views": views.list_for(conn, viewer=viewer)}


def _dated(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**row, "day_date": datetime.fromisoformat(row["day"]).date()} for row in rows]


@router.get("/watchlist")
def watchlist_page(request: Request, collector: CollectorDep, viewer: ViewerDep, expired: bool = False) -> Response:
    scope = people.scope_for(viewer.user)
    with collector.db.read() as conn:
        entries = watchlist.list_entries(conn, scope=scope, now=collector.clock(), include_expired=expired)
    context = {"entries": entries, "expired": expired, "notice": NOTICES.get(request.query_params.get("notice", ""))}
    return render(request, "watchlist.html", context)


@router.post("/watchlist")
async def watchlist_add(request: Request, collector: CollectorDep, viewer: PosterDep, address: AddressDep) -> Response:
    scope = people.scope_for(viewer.user)
    form = await request.form()
    expires = str(form.get("expires_at") or "").strip()[:64]
    try:
        until = filters.parse_time(expires) if expires else None  # a browser's datetime-local, read as UTC
    except (ValueError, OverflowError):
        raise InvalidInput(f"Until: {expires!r} is not a time like 2026-12-31T00:00 (UTC)") from None
    try:
        body = WatchlistIn(user=str(form.get("user") or "").strip(), vendor=str(form.get("vendor") or "").strip() or None, reason=str(form.get("reason") or ""), expires_at=until)
    except ValidationError as exc:
        raise InvalidInput(_problem(exc)) from None
    with collector.db.write() as conn:
        watchlist.add(conn, user_name=body.user, vendor=body.vendor, reason=body.reason, expires_at=body.expires_at, scope=scope, actor=viewer.user.name, address=address, now=collector.clock())
    return redirect("/ui/watchlist?notice=watched")


@router.post("/watchlist/{entry_id}/remove")
async def watchlist_remove(collector: CollectorDep, viewer: PosterDep, address: AddressDep, entry_id: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> Response:
    scope = people.scope_for(viewer.user)
    with collector.db.write() as conn:
        watchlist.remove(conn, entry_id=entry_id, scope=scope, actor=viewer.user.name, address=address, now=collector.clock())
    return redirect("/ui/watchlist?notice=unwatched")


@router.post("/views")
async def view_save(request: Request, collector: CollectorDep, viewer: PosterDep, address: AddressDep) -> Response:
    people.scope_for(viewer.user)
    form = await request.form()
    try:
        body = ViewIn(name=str(form.get("name") or "").strip(), query=str(form.get("query") or ""), shared=form.get("shared") == "on")
    except ValidationError as exc:
        raise InvalidInput(_problem(exc)) from None
    with collector.db.write() as conn:
        saved = views.create(conn, owner=viewer.user, name=body.name, query=body.query, shared=body.shared, address=address, now=collector.clock())
    return redirect(saved["url"])


@router.post("/views/{view_id}/delete")
async def view_delete(collector: CollectorDep, viewer: PosterDep, address: AddressDep, view_id: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> Response:
    people.scope_for(viewer.user)
    with collector.db.write() as conn:
        views.delete(conn, view_id=view_id, viewer=viewer.user, address=address, now=collector.clock())
    return redirect("/ui/events")
