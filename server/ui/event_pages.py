"""Event pages: the filtered, sorted list with bulk triage and export, and one event with its triage."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Request
from pydantic import ValidationError
from starlette.responses import Response, StreamingResponse

from agent import __version__
from agent.events import CHANNELS, DESTINATION_FIELDS
from server.api.deps import AddressDep, CollectorDep
from server.api.schemas import BulkTriageIn, CommentIn, DeviceIn, TriageIn
from server.collector import Collector
from server.errors import InvalidInput
from server.siem.export import write_events
from server.siem.fields import egress_verdict, enforcement_facts, process_chain, process_facts
from server.store import agents, audit, review, vendors
from server.store import users as user_store
from server.store.review import TRIAGE_STATUSES, EventFilter, TriageChange
from server.store.scope import Scope
from server.ui import case_pages, filters, matches, people_pages
from server.ui.render import UiRoute, redirect, render
from server.ui.session import PosterDep, ViewerDep

router = APIRouter(prefix="/ui/events", route_class=UiRoute, include_in_schema=False)
_EventId = Annotated[str, Path(max_length=64)]
EXPORT_FORMATS = {"csv": ("text/csv; charset=utf-8", "csv"), "jsonl": ("application/x-ndjson; charset=utf-8", "jsonl")}
_EXPORT_BATCH = 500
RELATED_SHOWN = 5
# Device fields the page labels itself; any other key an agent sent is listed as plain text.
DEVICE_FIELDS = frozenset(DeviceIn.model_fields)
# Enforcement fields the page labels itself; any other (a quarantine's id, a command) is listed as text.
ENFORCEMENT_FIELDS = frozenset({"action", "mode", "done", "detail"})
# An egress destination's fields with the page's labels; any other key an agent sent is listed as text.
EGRESS_LABELS = (
    ("tool", "Program"), ("transport", "Transport"), ("host", "Host"), ("port", "Port"), ("path", "Path"),
    ("url", "URL"), ("remote", "Git remote"),
)  # fmt: skip
# Notices after a redirect are codes, never text from the URL, so a link cannot put words on the page.
NOTICES = {"triaged": "Triage updated.", "commented": "Comment added.", "bulk": "Status set on the selected events."}


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", "invalid")


@router.get("")
def event_list(request: Request, collector: CollectorDep, viewer: ViewerDep) -> Response:
    view = filters.parse(request.query_params)
    scope = viewer.user.scope
    with collector.db.read() as conn:
        try:
            found = review.page(conn, scope=scope, filters=view.filters, limit=view.limit, cursor=view.cursor, sort=view.sort, pseudonyms=collector.pseudonyms)
        except InvalidInput as exc:
            view.problems.append(f"{exc} (showing the first page)")
            view.cursor = None
            found = review.page(conn, scope=scope, filters=view.filters, limit=view.limit, sort=view.sort, pseudonyms=collector.pseudonyms)
        vendor_names = [v["name"] for v in vendors.list_visible(conn, scope=viewer.user.scope)]
        extras = people_pages.list_extras(conn, viewer.user, now=collector.clock())  # watch badges, saved views
        case_extras = case_pages.list_extras(conn, viewer.user, now=collector.clock())  # the "add to case" picker
    notice = NOTICES.get(request.query_params.get("notice", ""))
    context = {
        "view": view,
        "page": found,
        "vendors": vendor_names,
        "notice": notice,
        "statuses": TRIAGE_STATUSES,
        "channels": CHANNELS,
        "severity_choices": filters.SEVERITY_CHOICES,
        "sorts": (("newest", "Newest first"), ("oldest", "Oldest first"), ("severity", "Most severe first")),
        "page_sizes": filters.PAGE_SIZES,
        "here": view.url(cursor=view.cursor),
        "processes": {item["id"]: process_facts(item.get("process")) for item in found.items},
        "may_triage": review.may_triage(viewer.user),
        **extras,
        **case_extras,
    }
    return render(request, "events.html", context, status=422 if view.problems else 200)


def _back(value: str) -> str:
    """Where a form on the list returns to: the same list view, never another page or site."""
    return value if value.startswith("/ui/events") and "\\" not in value and not value.startswith("/ui/events/") else "/ui/events"


def _with_notice(url: str, notice: str) -> str:
    return url + ("&" if "?" in url else "?") + f"notice={notice}"


@router.post("/triage")
async def bulk_triage(request: Request, collector: CollectorDep, viewer: PosterDep, address: AddressDep) -> Response:
    form = await request.form()
    ids = [value for value in form.getlist("ids") if isinstance(value, str)]
    back = _back(str(form.get("back") or ""))
    if not ids:
        raise InvalidInput("Select at least one event (the boxes in the first column), then choose a status.")
    try:
        body = BulkTriageIn(ids=ids, status=form.get("status"))  # type: ignore[arg-type]
    except ValidationError as exc:
        raise InvalidInput(_first_problem(exc)) from None
    with collector.db.write() as conn:
        review.set_triage(conn, event_ids=body.ids, change=TriageChange(status=body.status), actor=viewer.user, address=address, now=collector.clock(), bulk=True)
    return redirect(_with_notice(back, "bulk"))


@router.post("/export")
async def export(request: Request, collector: CollectorDep, viewer: PosterDep, address: AddressDep) -> Response:
    """The list's filtered events, oldest first, streamed as CSV or JSON lines; audited before the first byte."""
    form = await request.form()
    fmt = str(form.get("format") or "")
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput("format must be csv or jsonl")
    view = filters.parse({name: str(form.get(name) or "") for name in filters.FIELDS})
    if view.problems:
        raise InvalidInput("; ".join(view.problems))
    with collector.db.write() as conn:
        details = {"format": fmt, "filters": view.params, "via": "ui"}
        audit.append(conn, actor=viewer.user.name, action="events.export", target="download", details=details, address=address, now=collector.clock())
    media_type, extension = EXPORT_FORMATS[fmt]
    stamp = collector.clock().strftime("%Y%m%dT%H%M%SZ")
    headers = {"Content-Disposition": f'attachment; filename="dlp-events-{stamp}.{extension}"'}
    return StreamingResponse(_exported(collector, viewer.user.scope, view.filters, fmt), media_type=media_type, headers=headers)


def _exported(collector: Collector, scope: Scope, event_filter: EventFilter, fmt: str) -> Iterator[str]:
    """The export in pieces of a few hundred events, from one read transaction (a consistent snapshot)."""
    header = ""
    if fmt == "csv":
        buffer = io.StringIO(newline="")
        write_events([], buffer, fmt="csv", product_version=__version__)
        header = buffer.getvalue()
        yield header
    with collector.db.read() as conn:
        batch: list[dict[str, Any]] = []
        for item in review.iter_for_export(conn, scope=scope, filters=event_filter, pseudonyms=collector.pseudonyms):
            batch.append(item)
            if len(batch) >= _EXPORT_BATCH:
                yield _written(batch, fmt, header)
                batch = []
        if batch:
            yield _written(batch, fmt, header)


def _written(batch: list[dict[str, Any]], fmt: str, header: str) -> str:
    buffer = io.StringIO(newline="")
    write_events(batch, buffer, fmt=fmt, product_version=__version__)  # type: ignore[arg-type]
    # The CSV writer starts every call with the header row; it was sent once already.
    return buffer.getvalue()[len(header):]


@router.get("/{event_id}")
def event_detail(event_id: _EventId, request: Request, collector: CollectorDep, viewer: ViewerDep) -> Response:
    with collector.db.read() as conn:
        scope = viewer.user.scope
        item = review.get(conn, scope=scope, event_id=event_id, pseudonyms=collector.pseudonyms)
        # The assignee menu names the customer's accounts: only for those who may triage.
        people = [u["name"] for u in user_store.list_all(conn) if not u["disabled"]] if review.may_triage(viewer.user) else []
        # The collector's own access events have no agent.
        agent = agents.get(conn, agent_id=item["agent_id"], scope=scope) if item["agent_id"] else None
        same_file = _latest(conn, scope, collector, EventFilter(sha256=item["sha256"]), event_id) if item.get("sha256") else []
        serial = (item.get("device") or {}).get("serial")
        same_device = _latest(conn, scope, collector, EventFilter(device_serial=serial), event_id) if serial else []
        extras = people_pages.list_extras(conn, viewer.user, now=collector.clock())  # the watch badge
        case_extras = case_pages.event_extras(conn, viewer.user, event_id, now=collector.clock())
    context = {
        "item": item,
        "agent": agent,
        "people": people,
        "statuses": TRIAGE_STATUSES,
        "same_file": same_file,
        "same_device": same_device,
        "device_fields": DEVICE_FIELDS,
        "fingerprints": matches.fingerprint_views(item["matches"]),
        "process_chain": process_chain(item),
        "enforcement": enforcement_facts(item),
        "enforcement_extras": _extras(item.get("enforcement"), ENFORCEMENT_FIELDS),
        "verdict": egress_verdict(item),
        "egress_labels": EGRESS_LABELS,
        "destination_extras": _extras(item.get("destination"), frozenset(DESTINATION_FIELDS)),
        "notice": NOTICES.get(request.query_params.get("notice", "")),
        "may_triage": review.may_triage(viewer.user),
        "watched": extras["watched"],
        "people_pages": extras["saved_views"] is not None,
        **case_extras,
    }
    return render(request, "event.html", context)


def _extras(value: Any, known: frozenset[str]) -> dict[str, Any]:
    """The keys of an agent's object the page has no label for, to be listed as text."""
    return {key: item for key, item in value.items() if key not in known} if isinstance(value, dict) else {}


def _latest(conn: Any, scope: Scope, collector: Collector, event_filter: EventFilter, event_id: str) -> list[dict[str, Any]]:
    """The newest few other events in ``scope`` matching ``event_filter``."""
    items = review.page(conn, scope=scope, filters=event_filter, limit=RELATED_SHOWN + 1, pseudonyms=collector.pseudonyms).items
    return [item for item in items if item["id"] != event_id][:RELATED_SHOWN]


@router.post("/{event_id}/triage")
def triage(
    event_id: _EventId,
    collector: CollectorDep,
    viewer: PosterDep,
    address: AddressDep,
    status: Annotated[str, Form(max_length=32)] = "",
    assignee: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    try:
        body = TriageIn(status=status or None, assignee=assignee or None, clear_assignee=not assignee)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise InvalidInput(_first_problem(exc)) from None
    change = TriageChange(status=body.status, assignee=body.assignee, clear_assignee=body.clear_assignee)
    with collector.db.write() as conn:
        review.set_triage(conn, event_ids=[event_id], change=change, actor=viewer.user, address=address, now=collector.clock())
    return redirect(f"/ui/events/{event_id}?notice=triaged")


@router.post("/{event_id}/comments")
def comment(
    event_id: _EventId,
    collector: CollectorDep,
    viewer: PosterDep,
    address: AddressDep,
    body: Annotated[str, Form(max_length=10_000)] = "",
) -> Response:
    try:
        checked = CommentIn(body=body.strip())
    except ValidationError as exc:
        raise InvalidInput("The comment is empty or not valid text." if body.strip() else "Write a comment first.") from exc
    with collector.db.write() as conn:
        review.add_comment(conn, event_id=event_id, author=viewer.user, body=checked.body, address=address, now=collector.clock())
    return redirect(f"/ui/events/{event_id}?notice=commented")
