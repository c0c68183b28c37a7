"""The review API for reviewers and scripts: events, triage, agents, vendors.

Every read passes the account's scope to the store (server/store/scope.py): a scoped reviewer or a
vendor lead gets only their vendors' records, a vendor lead with staff names as pseudonyms."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from agent.events import CHANNELS, SEVERITIES, Severity
from server.api.deps import AddressDep, CollectorDep, UserDep
from server.api.schemas import (
    BulkTriageIn,
    BulkTriageOut,
    CommentIn,
    EventDetail,
    EventPage,
    TriageIn,
    VendorList,
    utc_representable,
)
from server.api.signature_schemas import AgentWithIndexesList, AgentWithIndexesPublic
from server.errors import InvalidInput
from server.store import agents, review, vendors
from server.store.review import TRIAGE_STATUSES, EventFilter, TriageChange

router = APIRouter(prefix="/api/v1", tags=["review"])

_Filter = Annotated[str | None, Query(max_length=255)]
_EventId = Annotated[str, Path(max_length=64)]
_AgentId = Annotated[str, Path(max_length=64)]


def _split(value: str | None, allowed: tuple[str, ...] | None = None, name: str = "") -> tuple[str, ...]:
    if not value:
        return ()
    items = tuple(part.strip() for part in value.split(",") if part.strip())
    if allowed is not None:
        bad = [item for item in items if item not in allowed]
        if bad:
            raise InvalidInput(f"{name} must be among {', '.join(allowed)}; got {', '.join(bad)[:200]}")
    return items


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidInput(f"{name} needs a time zone, e.g. 2026-11-24T09:00:00Z")
    if value is not None and not utc_representable(value):
        raise InvalidInput(f"{name} is outside the years 1 to 9999 once converted to UTC")
    return value


@router.get("/events", response_model=EventPage, summary="List events, newest first, with filters and keyset paging")
def list_events(
    collector: CollectorDep,
    user: UserDep,
    channel: Annotated[str | None, Query(max_length=255, description=f"comma-separated: {', '.join(CHANNELS)}")] = None,
    type: Annotated[str | None, Query(max_length=255, description="comma-separated event types, e.g. usb.write")] = None,
    severity: Annotated[str | None, Query(max_length=255, description="comma-separated exact severities")] = None,
    min_severity: Severity | None = None,
    vendor: _Filter = None,
    agent: _Filter = None,
    user_name: Annotated[str | None, Query(alias="user", max_length=255)] = None,
    rule: _Filter = None,
    status: Annotated[str | None, Query(max_length=255, description="triage status, comma-separated")] = None,
    sha256: _Filter = None,
    device: Annotated[str | None, Query(max_length=255, description="device serial")] = None,
    process: Annotated[str | None, Query(max_length=255, description="the base name of the event's process executable, exactly (cp, xclip)")] = None,
    destination: Annotated[str | None, Query(max_length=1000, description="egress destination hosts, comma-separated, exactly (case-insensitive)")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    filters = EventFilter(
        channels=_split(channel, CHANNELS, "channel"),
        types=_split(type),
        severities=_split(severity, SEVERITIES, "severity"),
        min_severity=min_severity,
        vendor=vendor,
        agent=agent,
        user=user_name,
        rule=rule,
        statuses=_split(status, TRIAGE_STATUSES, "status"),
        sha256=sha256,
        device_serial=device,
        process_name=process,
        destination_hosts=_split(destination),
        since=_aware(since, "since"),
        until=_aware(until, "until"),
    )
    with collector.db.read() as conn:
        items, next_cursor = review.query(conn, scope=user.scope, filters=filters, limit=limit, cursor=cursor, pseudonyms=collector.pseudonyms)
    return {"items": items, "next_cursor": next_cursor}


@router.get("/events/{event_id}", response_model=EventDetail, summary="One event with comments and related events")
def get_event(event_id: _EventId, collector: CollectorDep, user: UserDep) -> dict[str, Any]:
    with collector.db.read() as conn:
        return review.get(conn, scope=user.scope, event_id=event_id, pseudonyms=collector.pseudonyms)


@router.patch("/events/{event_id}/triage", response_model=EventDetail, summary="Set triage status and/or assignee")
def triage_event(event_id: _EventId, body: TriageIn, collector: CollectorDep, user: UserDep, address: AddressDep) -> dict[str, Any]:
    change = TriageChange(status=body.status, assignee=body.assignee, clear_assignee=body.clear_assignee)
    with collector.db.write() as conn:
        review.set_triage(conn, event_ids=[event_id], change=change, actor=user, address=address, now=collector.clock())
        return review.get(conn, scope=user.scope, event_id=event_id)


@router.post("/events/triage", response_model=BulkTriageOut, summary="Set the triage status of many events at once")
def bulk_triage(body: BulkTriageIn, collector: CollectorDep, user: UserDep, address: AddressDep) -> dict[str, Any]:
    with collector.db.write() as conn:
        changed = review.set_triage(conn, event_ids=body.ids, change=TriageChange(status=body.status), actor=user, address=address, now=collector.clock(), bulk=True)
    return {"updated": len(changed), "status": body.status}


@router.post("/events/{event_id}/comments", status_code=201, response_model=EventDetail, summary="Comment on an event")
def comment_event(event_id: _EventId, body: CommentIn, collector: CollectorDep, user: UserDep, address: AddressDep) -> dict[str, Any]:
    with collector.db.write() as conn:
        review.add_comment(conn, event_id=event_id, author=user, body=body.body, address=address, now=collector.clock())
        return review.get(conn, scope=user.scope, event_id=event_id)


@router.get("/agents", response_model=AgentWithIndexesList, summary="Agents with health and IP-address history")
def list_agents(
    collector: CollectorDep,
    user: UserDep,
    vendor: _Filter = None,
    status: Annotated[str | None, Query(pattern="^(online|offline|revoked)$")] = None,
) -> dict[str, Any]:
    collector.liveness.flush()  # this collector's own buffered liveness shows at once (server/liveness.py)
    with collector.db.read() as conn:
        return {"items": agents.list_agents(conn, vendor=vendor, status=status, scope=user.scope)}


@router.get("/agents/{agent_id}", response_model=AgentWithIndexesPublic, summary="One agent")
def get_agent(agent_id: _AgentId, collector: CollectorDep, user: UserDep) -> dict[str, Any]:
    collector.liveness.flush()
    with collector.db.read() as conn:
        return agents.get(conn, agent_id=agent_id, scope=user.scope)


@router.get("/vendors", response_model=VendorList, summary="Vendors with their office ranges and agent counts")
def list_vendors(collector: CollectorDep, user: UserDep) -> dict[str, Any]:
    with collector.db.read() as conn:
        return {"items": vendors.list_visible(conn, scope=user.scope)}
