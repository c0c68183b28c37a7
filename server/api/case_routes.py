"""The cases API: investigations that group events, with comments, history, evidence export and reveals.

Routes stay thin: who may see or change what is decided in server/store/cases.py.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from agent.events import Severity
from server import case_export
from server.api.case_schemas import CaseCommentIn, CaseDetail, CaseEventsIn, CaseIn, CaseList, CaseUpdateIn, RevealIn, RevealOut
from server.api.deps import AddressDep, CollectorDep, UserDep
from server.errors import InvalidInput
from server.store import case_lists, cases
from server.store.case_cursors import CASE_SORTS
from server.store.case_lists import CaseFilter
from server.store.cases import STATUSES, CaseChange
from server.store.users import User

router = APIRouter(prefix="/api/v1/cases", tags=["cases"])
_CaseId = Annotated[int, Path(ge=1, le=2**63 - 1)]
_EventId = Annotated[str, Path(min_length=1, max_length=64)]


def _detail(collector: Any, conn: Any, case_id: int, user: User) -> dict[str, Any]:
    return cases.get(conn, case_id=case_id, actor=user, scope=user.scope, now=collector.clock(), pseudonyms=collector.pseudonyms)


@router.get("", response_model=CaseList, summary="List cases with filters, soonest due first by default (keyset paging)")
def list_cases(
    collector: CollectorDep,
    user: UserDep,
    status: Annotated[str | None, Query(max_length=64, description=f"comma-separated: {', '.join(STATUSES)}")] = None,
    assignee: Annotated[str | None, Query(max_length=128)] = None,
    severity: Severity | None = None,
    overdue: bool = False,
    vendor: Annotated[str | None, Query(max_length=255, description="cases holding an event of this vendor")] = None,
    sort: Annotated[str, Query(pattern=f"^({'|'.join(CASE_SORTS)})$")] = "due",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    statuses = tuple(part.strip() for part in (status or "").split(",") if part.strip())
    bad = [s for s in statuses if s not in STATUSES]
    if bad:
        raise InvalidInput(f"status must be among {', '.join(STATUSES)}")
    filters = CaseFilter(statuses=statuses, assignee=assignee, severity=severity, overdue=overdue, vendor=vendor)
    with collector.db.read() as conn:
        found = case_lists.page(conn, filters=filters, scope=user.scope, now=collector.clock(), limit=limit, cursor=cursor, sort=sort)
    return {"items": found.items, "next_cursor": found.next_cursor}


@router.post("", status_code=201, response_model=CaseDetail, summary="Open a case of some events")
def create_case(body: CaseIn, collector: CollectorDep, user: UserDep, address: AddressDep) -> dict[str, Any]:
    with collector.db.write() as conn:
        case_id = cases.create(
            conn, title=body.title, event_refs=body.events, actor=user, scope=user.scope, address=address, now=collector.clock(),
            assignee=body.assignee, severity=body.severity, due_at=body.due_at,
        )  # fmt: skip
        return _detail(collector, conn, case_id, user)


@router.get("/{case_id}", response_model=CaseDetail, summary="One case with its events, comments and history")
def get_case(case_id: _CaseId, collector: CollectorDep, user: UserDep) -> dict[str, Any]:
    with collector.db.read() as conn:
        return _detail(collector, conn, case_id, user)


@router.patch("/{case_id}", response_model=CaseDetail, summary="Change title, status (closing needs an outcome), assignee, severity or due date")
def update_case(case_id: _CaseId, body: CaseUpdateIn, collector: CollectorDep, user: UserDep, address: AddressDep) -> dict[str, Any]:
    sent = body.model_fields_set
    change = CaseChange(
        title=body.title, status=body.status, outcome=body.outcome,
        assignee=body.assignee, clear_assignee="assignee" in sent and body.assignee is None,
        severity=body.severity, clear_severity="severity" in sent and body.severity is None,
        due_at=body.due_at, clear_due="due_at" in sent and body.due_at is None,
    )  # fmt: skip
    with collector.db.write() as conn:
        cases.update(conn, case_id=case_id, change=change, actor=user, scope=user.scope, address=address, now=collector.clock())
        return _detail(collector, conn, case_id, user)


@router.post("/{case_id}/events", response_model=CaseDetail, summary="Add events to a case")
def add_events(case_id: _CaseId, body: CaseEventsIn, collector: CollectorDep, user: UserDep, address: AddressDep) -> dict[str, Any]:
    with collector.db.write() as conn:
        cases.add_events(conn, case_id=case_id, event_refs=body.events, actor=user, scope=user.scope, address=address, now=collector.clock())
        return _detail(collector, conn, case_id, user)


@router.delete("/{case_id}/events/{event_id}", response_model=CaseDetail, summary="Take an event out of a case")
def remove_event(case_id: _CaseId, event_id: _EventId, collector: CollectorDep, user: UserDep, address: AddressDep) -> dict[str, Any]:
    with collector.db.write() as conn:
        cases.remove_event(conn, case_id=case_id, event_ref=event_id, actor=user, scope=user.scope, address=address, now=collector.clock())
        return _detail(collector, conn, case_id, user)


@router.post("/{case_id}/comments", status_code=201, response_model=CaseDetail, summary="Comment on a case (internal: the customer's side only)")
def comment(case_id: _CaseId, body: CaseCommentIn, collector: CollectorDep, user: UserDep, address: AddressDep) -> dict[str, Any]:
    with collector.db.write() as conn:
        cases.add_comment(
            conn, case_id=case_id, body=body.body, internal=body.internal, actor=user, scope=user.scope, address=address, now=collector.clock()
        )
        return _detail(collector, conn, case_id, user)


@router.get(
    "/{case_id}/export",
    summary="The case as a self-contained evidence zip (case.json, summary.html, SHA256SUMS); audited",
    responses={200: {"content": {"application/zip": {}}}},
)
def export(case_id: _CaseId, collector: CollectorDep, user: UserDep, address: AddressDep) -> Response:
    with collector.db.write() as conn:
        name, data = case_export.evidence(
            conn, case_id=case_id, actor=user, scope=user.scope, pseudonyms=collector.pseudonyms, address=address, now=collector.clock()
        )
    return Response(data, media_type="application/zip", headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.post("/{case_id}/reveal", response_model=RevealOut, summary="Show a staff user's real name to their vendor's leads, justified by this case")
def reveal(case_id: _CaseId, body: RevealIn, collector: CollectorDep, user: UserDep, address: AddressDep) -> dict[str, Any]:
    with collector.db.write() as conn:
        vendor_names = cases.reveal(conn, case_id=case_id, user_name=body.user, actor=user, scope=user.scope, address=address, now=collector.clock())
    return {"user": body.user, "vendors": vendor_names}

