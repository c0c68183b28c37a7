"""Case pages: the list with filters and due dates, one case with its timeline, forms, comments and history.

Thin over server/store/cases.py, which decides who sees and changes what; forms redirect with
notice codes like the event pages. ``list_extras`` and ``event_extras`` are what the event list
and event page show of cases (the "add to a case" picker, the cases holding an event).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Request
from pydantic import ValidationError
from starlette.responses import Response

from agent.events import SEVERITIES
from server import case_export
from server.api.case_schemas import CaseCommentIn
from server.api.deps import AddressDep, CollectorDep
from server.errors import InvalidInput
from server.siem.fields import process_facts
from server.store import case_lists, cases, vendors
from server.store import users as user_store
from server.store.case_cursors import CASE_SORTS
from server.store.case_lists import CaseFilter
from server.store.cases import MAX_EVENTS, OUTCOMES, STATUSES, CaseChange
from server.store.users import User
from server.ui.render import UiRoute, redirect, render
from server.ui.session import PosterDep, ViewerDep

router = APIRouter(prefix="/ui/cases", route_class=UiRoute, include_in_schema=False)
_CaseId = Annotated[int, Path(ge=1, le=2**63 - 1)]
_EventId = Annotated[str, Path(min_length=1, max_length=64)]
PAGE_SIZE = 50
SORT_LABELS = {"due": "Soonest due first", "updated": "Recently changed first", "severity": "Most severe first"}
# Notices after a redirect are codes, never text from the URL.
NOTICES = {
    "created": "Case opened.", "added": "Events added to the case.", "removed": "Event taken out of the case.",
    "saved": "Case saved.", "unchanged": "Nothing changed.", "commented": "Comment added.", "revealed": "Name revealed to the vendor's leads.",
}  # fmt: skip
_FILTER_FIELDS = ("status", "assignee", "severity", "overdue", "vendor", "sort")


def list_extras(conn: Any, user: User, *, now: datetime) -> dict[str, Any]:
    """For the event list: the open cases the bulk "add to case" offers (none for vendor leads, who cannot)."""
    return {"open_cases": [] if user.is_vendor_lead else case_lists.open_cases(conn, scope=user.scope, now=now)}


def event_extras(conn: Any, user: User, event_id: str, *, now: datetime) -> dict[str, Any]:
    """For the event page: the cases holding the event, and the open ones it could join."""
    return {"event_cases": case_lists.for_event(conn, event_ref=event_id, scope=user.scope, now=now), **list_extras(conn, user, now=now)}


def _assignable(conn: Any) -> list[str]:
    return [u["name"] for u in user_store.list_all(conn) if not u["disabled"] and u["role"] != "vendor_lead"]


def _filters(params: Any) -> tuple[CaseFilter, str, dict[str, str], list[str]]:
    values = {name: str(params.get(name) or "")[:255] for name in _FILTER_FIELDS}
    problems = []
    status = values["status"]
    if status and status not in STATUSES:
        problems.append(f"status must be one of {', '.join(STATUSES)}")
        status = ""
    severity = values["severity"]
    if severity and severity not in SEVERITIES:
        problems.append(f"severity must be one of {', '.join(SEVERITIES)}")
        severity = ""
    sort = values["sort"] if values["sort"] in CASE_SORTS else "due"
    found = CaseFilter(
        statuses=(status,) if status else (), assignee=values["assignee"] or None, severity=severity or None,
        overdue=values["overdue"] == "1", vendor=values["vendor"] or None,
    )  # fmt: skip
    return found, sort, {name: value for name, value in values.items() if value}, problems


@router.get("")
def case_list(request: Request, collector: CollectorDep, viewer: ViewerDep) -> Response:
    found_filter, sort, params, problems = _filters(request.query_params)
    cursor = str(request.query_params.get("cursor") or "")[:64] or None
    now = collector.clock()
    scope = viewer.user.scope
    with collector.db.read() as conn:
        try:
            found = case_lists.page(conn, filters=found_filter, scope=scope, now=now, limit=PAGE_SIZE, cursor=cursor, sort=sort)
        except InvalidInput as exc:
            problems.append(f"{exc} (showing the first page)")
            cursor = None
            found = case_lists.page(conn, filters=found_filter, scope=scope, now=now, limit=PAGE_SIZE, sort=sort)
        vendor_names = [v["name"] for v in vendors.list_visible(conn, scope=scope)]
        people = _assignable(conn) if not viewer.user.is_vendor_lead else []
    context = {
        "page": found, "params": params, "cursor": cursor, "sort": sort, "sort_labels": SORT_LABELS, "statuses": STATUSES,
        "severities": SEVERITIES, "vendors": vendor_names, "people": people, "problems": problems,
        "notice": NOTICES.get(request.query_params.get("notice", "")),
    }  # fmt: skip
    return render(request, "cases.html", context, status=422 if problems else 200)


def _event_ids(form: Any) -> list[str]:
    ids = [value[:64] for value in form.getlist("ids") if isinstance(value, str) and value]
    if not ids:
        raise InvalidInput("Select at least one event (the boxes in the first column) first.")
    if len(ids) > MAX_EVENTS:
        raise InvalidInput(f"A case holds at most {MAX_EVENTS} events.")
    return ids


@router.post("/new")
async def new_case(request: Request, collector: CollectorDep, viewer: PosterDep, address: AddressDep) -> Response:
    """A new case of the events selected on the list or of the one event page."""
    form = await request.form()
    title = str(form.get("title") or "").strip()
    if not title:
        raise InvalidInput("Give the new case a title.")
    if len(title) > 200:
        raise InvalidInput("A case title is at most 200 characters.")
    ids = _event_ids(form)
    with collector.db.write() as conn:
        case_id = cases.create(conn, title=title, event_refs=ids, actor=viewer.user, scope=viewer.user.scope, address=address, now=collector.clock())
    return redirect(f"/ui/cases/{case_id}?notice=created")


@router.post("/add")
async def add_to_case(request: Request, collector: CollectorDep, viewer: PosterDep, address: AddressDep) -> Response:
    form = await request.form()
    chosen = str(form.get("case") or "")
    if not chosen.isdigit() or len(chosen) > 18:
        raise InvalidInput("Choose a case to add the events to.")
    ids = _event_ids(form)
    with collector.db.write() as conn:
        cases.add_events(conn, case_id=int(chosen), event_refs=ids, actor=viewer.user, scope=viewer.user.scope, address=address, now=collector.clock())
    return redirect(f"/ui/cases/{int(chosen)}?notice=added")


@router.get("/{case_id}")
def case_detail(case_id: _CaseId, request: Request, collector: CollectorDep, viewer: ViewerDep) -> Response:
    now = collector.clock()
    with collector.db.read() as conn:
        item = cases.get(conn, case_id=case_id, actor=viewer.user, scope=viewer.user.scope, now=now, pseudonyms=collector.pseudonyms)
        people = _assignable(conn) if not viewer.user.is_vendor_lead else []
    context = {
        "case": item, "people": people, "statuses": STATUSES, "outcomes": OUTCOMES, "severities": SEVERITIES,
        "may_change": not viewer.user.is_vendor_lead, "processes": {e["id"]: process_facts(e.get("process")) for e in item["events"]},
        "notice": NOTICES.get(request.query_params.get("notice", "")),
    }  # fmt: skip
    return render(request, "case.html", context)


def _due(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput("The due date is not a date and time (YYYY-MM-DDTHH:MM).") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@router.post("/{case_id}/update")
def update_case(
    case_id: _CaseId,
    collector: CollectorDep,
    viewer: PosterDep,
    address: AddressDep,
    title: Annotated[str, Form(max_length=200)] = "",
    status: Annotated[str, Form(max_length=32)] = "",
    outcome: Annotated[str, Form(max_length=32)] = "",
    assignee: Annotated[str, Form(max_length=128)] = "",
    severity: Annotated[str, Form(max_length=16)] = "",
    due: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """The case form sends every field; empty assignee, severity and due clear them."""
    due_at = _due(due) if due else None
    change = CaseChange(
        title=title or None, status=status or None, outcome=outcome or None,
        assignee=assignee or None, clear_assignee=not assignee, severity=severity or None, clear_severity=not severity,
        due_at=due_at, clear_due=due_at is None,
    )  # fmt: skip
    with collector.db.write() as conn:
        changed = cases.update(conn, case_id=case_id, change=change, actor=viewer.user, scope=viewer.user.scope, address=address, now=collector.clock())
    return redirect(f"/ui/cases/{case_id}?notice={'saved' if changed else 'unchanged'}")


@router.post("/{case_id}/comments")
def comment(
    case_id: _CaseId,
    collector: CollectorDep,
    viewer: PosterDep,
    address: AddressDep,
    body: Annotated[str, Form(max_length=10_000)] = "",
    internal: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    try:
        checked = CaseCommentIn(body=body.strip(), internal=bool(internal))
    except ValidationError as exc:
        raise InvalidInput("The comment is empty or not valid text." if body.strip() else "Write a comment first.") from exc
    with collector.db.write() as conn:
        cases.add_comment(
            conn, case_id=case_id, body=checked.body, internal=checked.internal, actor=viewer.user, scope=viewer.user.scope, address=address,
            now=collector.clock(),
        )  # fmt: skip
    return redirect(f"/ui/cases/{case_id}?notice=commented#case-comments")


@router.post("/{case_id}/events/{event_id}/remove")
def remove_event(case_id: _CaseId, event_id: _EventId, collector: CollectorDep, viewer: PosterDep, address: AddressDep) -> Response:
    with collector.db.write() as conn:
        cases.remove_event(conn, case_id=case_id, event_ref=event_id, actor=viewer.user, scope=viewer.user.scope, address=address, now=collector.clock())
    return redirect(f"/ui/cases/{case_id}?notice=removed")


@router.post("/{case_id}/reveal")
def reveal(case_id: _CaseId, collector: CollectorDep, viewer: PosterDep, address: AddressDep, user: Annotated[str, Form(min_length=1, max_length=255)]) -> Response:
    with collector.db.write() as conn:
        cases.reveal(conn, case_id=case_id, user_name=user, actor=viewer.user, scope=viewer.user.scope, address=address, now=collector.clock())
    return redirect(f"/ui/cases/{case_id}?notice=revealed")


@router.post("/{case_id}/export")
def export(case_id: _CaseId, collector: CollectorDep, viewer: PosterDep, address: AddressDep) -> Response:
    """The evidence zip (server/case_export.py); a POST with the form's token, as exporting is an audited action."""
    with collector.db.write() as conn:
        name, data = case_export.evidence(
            conn, case_id=case_id, actor=viewer.user, scope=viewer.user.scope, pseudonyms=collector.pseudonyms, address=address, now=collector.clock()
        )
    return Response(data, media_type="application/zip", headers={"Content-Disposition": f'attachment; filename="{name}"'})
