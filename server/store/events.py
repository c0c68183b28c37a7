"""Events: idempotent ingest from agents, events the collector raises itself, and their reading.

Ingest inserts with ON CONFLICT DO NOTHING on the agent's event id, so a batch retried after a
lost reply (or sent by two collectors' worth of retries) stores each event once; the ids that
were already there are reported back as duplicates. An id that exists under a *different*
agent is a conflict, never silently merged. Everything one batch writes (events, rule index,
alert outbox) commits in the caller's single transaction.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

from sqlalchemy import Connection, and_, exists, func, select, tuple_

from server.db.tables import (
    alert_outbox,
    event_comments,
    event_rules,
    events,
    users,
    vendors,
)
from server.errors import InvalidInput, NotFound
from server.store.agents import AgentIdentity
from server.store.cursors import SORTS, Cursor
from server.store.sql import insert, iso

SEVERITY_RANK = {"low": 1, "medium": 2, "high": 3, "critical": 4}
TRIAGE_STATUSES = ("new", "investigating", "benign", "confirmed_leak")


@dataclass
class IngestResult:
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    alert_seqs: list[int] = field(default_factory=list)


def _clean(value: Any, limit: int = 4096) -> str | None:
    """A column copy of an agent string: PostgreSQL text cannot hold NUL, and columns are bounded."""
    if value is None:
        return None
    return str(value).replace("\x00", "")[:limit]


def _row(
    record: dict[str, Any], *, body: str | None, agent: AgentIdentity, received_at: datetime, occurred_at: datetime, address: str | None, country: str | None
) -> dict[str, Any]:
    severity = record.get("severity")
    device = record.get("device") or {}
    return {
        "id": record["id"],
        "agent_id": agent.id,
        "vendor_id": agent.vendor_id,
        "channel": record["channel"],
        "type": record["type"],
        "occurred_at": occurred_at,
        "received_at": received_at,
        "severity": severity,
        "severity_rank": SEVERITY_RANK.get(severity or "", 0),
        "status": record.get("status"),
        "host": _clean(record.get("host") or agent.hostname, 255),
        "user_name": _clean(record.get("user"), 255),
        "path": _clean(record.get("path")),
        "sha256": record.get("sha256"),
        "device_serial": _clean(device.get("serial"), 255),
        "body": body if body is not None else json.dumps(record, ensure_ascii=False, separators=(",", ":")),
        "source_ip": address,
        "source_country": country,
        "triage_status": "new",
    }


def ingest(
    conn: Connection,
    *,
    agent: AgentIdentity,
    records: Sequence[dict[str, Any]],
    occurred: Sequence[datetime],
    bodies: Sequence[str] | None = None,
    address: str | None,
    country: str | None,
    now: datetime,
    alert_targets: Sequence[str] = (),
    alert_min_rank: int = 5,
) -> IngestResult:
    """Store a validated batch; ``occurred`` holds each record's parsed ``occurred_at`` and
    ``bodies`` (optional) each record already encoded as compact JSON."""
    result = IngestResult()
    unique: dict[str, tuple[dict[str, Any], datetime, str | None]] = {}
    for record, occurred_at, body in zip(records, occurred, bodies or [None] * len(records)):
        if record["id"] in unique:
            result.duplicates.append(record["id"])
        else:
            unique[record["id"]] = (record, occurred_at, body)
    if not unique:
        return result
    records = [record for record, _, _ in unique.values()]
    rows = [_row(r, body=b, agent=agent, received_at=now, occurred_at=t, address=address, country=country) for r, t, b in unique.values()]
    stmt = insert(conn, events).on_conflict_do_nothing(index_elements=[events.c.id]).returning(events.c.seq, events.c.id, events.c.severity_rank)
    inserted = {row.id: row for row in conn.execute(stmt, rows)} if len(rows) > 1 else _insert_one(conn, stmt, rows[0])
    missing = [r["id"] for r in rows if r["id"] not in inserted]
    owners = dict(conn.execute(select(events.c.id, events.c.agent_id).where(events.c.id.in_(missing))).all()) if missing else {}
    rule_rows: list[dict[str, Any]] = []
    outbox_rows: list[dict[str, Any]] = []
    for record in records:
        event_id = record["id"]
        row = inserted.get(event_id)
        if row is None:
            (result.duplicates if owners.get(event_id) == agent.id else result.conflicts).append(event_id)
            continue
        result.accepted.append(event_id)
        for rule in sorted({_clean(m.get("rule"), 255) for m in record.get("matches") or [] if m.get("rule")}):
            rule_rows.append({"event_seq": row.seq, "rule": rule})
        if row.severity_rank >= alert_min_rank:
            result.alert_seqs.append(row.seq)
            outbox_rows.extend({"event_seq": row.seq, "target": t, "attempts": 0, "next_attempt_at": now, "failed": False} for t in alert_targets)
    if rule_rows:
        conn.execute(event_rules.insert(), rule_rows)
    if outbox_rows:
        conn.execute(alert_outbox.insert(), outbox_rows)
    return result


def _insert_one(conn: Connection, stmt: Any, row: dict[str, Any]) -> dict[str, Any]:
    found = conn.execute(stmt.values(**row)).first()
    return {found.id: found} if found else {}


def raise_agent_event(
    conn: Connection,
    *,
    agent: AgentIdentity,
    kind: str,
    details: dict[str, Any],
    now: datetime,
    severity: str | None = None,
    address: str | None = None,
    country: str | None = None,
    alert_targets: Sequence[str] = (),
    alert_min_rank: int = 5,
) -> str:
    """An event the collector itself observed about an agent (``agent.offline``, ``agent.unexpected_ip``)."""
    record = {
        "schema": 1,
        "id": str(uuid.uuid4()),
        "type": kind,
        "channel": "agent",
        "occurred_at": iso(now),
        "host": agent.hostname,
        "severity": severity,
        "matches": [],
        "origin": "collector",
        **details,
    }
    ingest(conn, agent=agent, records=[record], occurred=[now], address=address, country=country, now=now, alert_targets=alert_targets, alert_min_rank=alert_min_rank)
    return record["id"]


@dataclass(frozen=True)
class EventFilter:
    channels: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    min_severity: str | None = None
    vendor: str | None = None
    agent: str | None = None
    user: str | None = None
    rule: str | None = None
    statuses: tuple[str, ...] = ()
    sha256: str | None = None
    device_serial: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None
    prev_cursor: str | None
    """None on the first page (and on a page reached backwards that has nothing before it)."""


def _base_query() -> Any:
    return (
        select(events, vendors.c.name.label("vendor"), users.c.name.label("assignee"))
        .join(vendors, vendors.c.id == events.c.vendor_id)
        .outerjoin(users, users.c.id == events.c.assignee_id)
    )


def _keys(sort: str) -> list[Any]:
    return [events.c.severity_rank, events.c.seq] if sort == "severity" else [events.c.seq]


def _key_of(sort: str, row: Any) -> tuple[int, ...]:
    return (row.severity_rank, row.seq) if sort == "severity" else (row.seq,)


def _cursor_at(sort: str, row: Any, *, backward: bool) -> str:
    return Cursor(sort, row.seq, row.severity_rank if sort == "severity" else None, backward).encode()


def query(
    conn: Connection, *, filters: EventFilter, limit: int, cursor: str | None = None, sort: str = "newest"
) -> tuple[list[dict[str, Any]], str | None]:
    """``limit`` events in ``sort`` order; the cursor continues after the last item (keyset paging)."""
    found = page(conn, filters=filters, limit=limit, cursor=cursor, sort=sort)
    return found.items, found.next_cursor


def page(conn: Connection, *, filters: EventFilter, limit: int, cursor: str | None = None, sort: str = "newest") -> Page:
    """One page in ``sort`` order, with cursors to the pages after and before it.

    Keyset paging on (severity_rank, seq) or seq, each backed by an index, so page 5,000 costs
    what page 1 does and never counts or skips rows. A backward cursor reads the keys on the
    other side in reverse index order and flips the result.
    """
    if sort not in SORTS:
        raise InvalidInput(f"sort must be one of {', '.join(SORTS)}")
    position = Cursor.decode(cursor) if cursor else None
    if position is not None and position.sort != sort:
        raise InvalidInput("cursor belongs to another sort order; start again from the first page")
    descending = sort != "oldest"
    backward = position is not None and position.backward
    keys = _keys(sort)
    conditions = _conditions(filters)
    if position is not None:
        key = tuple_(*keys) if len(keys) > 1 else keys[0]
        value = tuple_(position.rank, position.seq) if sort == "severity" else position.seq
        # Forward on a descending sort (or backward on an ascending one) wants smaller keys.
        conditions.append(key < value if descending != backward else key > value)
    reading_descending = descending != backward
    order = [k.desc() if reading_descending else k.asc() for k in keys]
    stmt = _base_query().order_by(*order).limit(limit + 1)
    if conditions:
        stmt = stmt.where(and_(*conditions))
    rows = conn.execute(stmt).all()
    more = len(rows) > limit
    rows = rows[:limit]
    if backward:
        rows.reverse()
    if not rows:
        return Page([], None, None)
    if backward:
        next_cursor = _cursor_at(sort, rows[-1], backward=False)
        prev_cursor = _cursor_at(sort, rows[0], backward=True) if more else None
    else:
        next_cursor = _cursor_at(sort, rows[-1], backward=False) if more else None
        prev_cursor = _cursor_at(sort, rows[0], backward=True) if position is not None else None
    return Page([public(row) for row in rows], next_cursor, prev_cursor)


def _conditions(f: EventFilter) -> list[Any]:
    c: list[Any] = []
    if f.channels:
        c.append(events.c.channel.in_(f.channels))
    if f.types:
        c.append(events.c.type.in_(f.types))
    if f.severities:
        # The rank mirrors the severity name and is indexed with seq; unknown names match nothing.
        c.append(events.c.severity_rank.in_([SEVERITY_RANK.get(name, -1) for name in f.severities]))
    if f.min_severity:
        c.append(events.c.severity_rank >= SEVERITY_RANK[f.min_severity])
    if f.vendor:
        c.append(vendors.c.name == f.vendor)
    if f.agent:
        c.append(events.c.agent_id == f.agent)
    if f.user:
        c.append(events.c.user_name == f.user)
    if f.rule:
        c.append(exists().where(event_rules.c.event_seq == events.c.seq, event_rules.c.rule == f.rule))
    if f.statuses:
        c.append(events.c.triage_status.in_(f.statuses))
    if f.sha256:
        c.append(events.c.sha256 == f.sha256)
    if f.device_serial:
        c.append(events.c.device_serial == f.device_serial)
    if f.since:
        c.append(events.c.occurred_at >= f.since)
    if f.until:
        c.append(events.c.occurred_at < f.until)
    return c


def public(row: Any) -> dict[str, Any]:
    """The review API's view of one event: the agent's record plus what the collector knows."""
    item = json.loads(row.body)
    item.update(
        id=row.id,
        seq=row.seq,
        agent_id=row.agent_id,
        vendor=row.vendor,
        channel=row.channel,
        type=row.type,
        host=row.host,
        occurred_at=iso(row.occurred_at),
        received_at=iso(row.received_at),
        severity=row.severity,
        source_ip=row.source_ip,
        source_country=row.source_country,
        triage={"status": row.triage_status, "assignee": row.assignee},
    )
    item.setdefault("path", None)
    item.setdefault("sha256", None)
    item.setdefault("matches", [])
    item.setdefault("device", None)
    return item


def _row_by_id(conn: Connection, event_id: str) -> Any:
    row = conn.execute(_base_query().where(events.c.id == event_id)).first()
    if row is None:
        raise NotFound(f"no event {event_id!r}")
    return row


def get(conn: Connection, *, event_id: str) -> dict[str, Any]:
    """One event with its comments and how many other events share its file or device."""
    row = _row_by_id(conn, event_id)
    item = public(row)
    comments = conn.execute(
        select(event_comments.c.body, event_comments.c.created_at, users.c.name)
        .join(users, users.c.id == event_comments.c.user_id)
        .where(event_comments.c.event_seq == row.seq)
        .order_by(event_comments.c.id)
    )
    item["comments"] = [{"author": c.name, "body": c.body, "created_at": iso(c.created_at)} for c in comments]
    related: dict[str, int] = {}
    for key, column, value in (("same_sha256", events.c.sha256, row.sha256), ("same_device", events.c.device_serial, row.device_serial)):
        related[key] = conn.execute(select(func.count()).where(column == value, events.c.seq != row.seq)).scalar_one() if value else 0
    item["related"] = related
    return item


def triage(conn: Connection, *, event_id: str, status: str | None, assignee_id: int | None, clear_assignee: bool = False) -> dict[str, Any]:
    """Change an event's triage status and/or assignee; returns the previous values."""
    row = _row_by_id(conn, event_id)
    values: dict[str, Any] = {}
    if status is not None:
        if status not in TRIAGE_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(TRIAGE_STATUSES)}")
        values["triage_status"] = status
    if assignee_id is not None or clear_assignee:
        values["assignee_id"] = assignee_id
    if values:
        conn.execute(events.update().where(events.c.seq == row.seq).values(**values))
    return {"status": row.triage_status, "assignee": row.assignee}


def comment(conn: Connection, *, event_id: str, user_id: int, body: str, now: datetime) -> None:
    row = _row_by_id(conn, event_id)
    conn.execute(event_comments.insert().values(event_seq=row.seq, user_id=user_id, body=body, created_at=now))


def iter_for_export(conn: Connection, *, filters: EventFilter, batch: int = 1000) -> Any:
    """Every matching event, oldest first, fetched in keyset batches (flat memory)."""
    after = 0
    conditions = _conditions(filters)
    while True:
        stmt = _base_query().where(and_(events.c.seq > after, *conditions)).order_by(events.c.seq).limit(batch)
        rows = conn.execute(stmt).all()
        if not rows:
            return
        for row in rows:
            yield public(row)
        after = rows[-1].seq
