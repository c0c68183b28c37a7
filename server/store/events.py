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
from datetime import datetime, timezone
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
from server.store.sql import iso

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


# The columns ingest writes, in the order of the tuples built by ``_row``.
_COLUMNS = (
    "id", "agent_id", "vendor_id", "channel", "type", "occurred_at", "received_at", "severity", "severity_rank", "status",
    "host", "user_name", "path", "sha256", "device_serial", "body", "source_ip", "source_country", "triage_status",
)  # fmt: skip
_TIME_COLUMNS = (_COLUMNS.index("occurred_at"), _COLUMNS.index("received_at"))


def _row(
    record: dict[str, Any], *, body: str | None, agent: AgentIdentity, received_at: datetime, occurred_at: datetime, address: str | None, country: str | None
) -> tuple[Any, ...]:
    severity = record.get("severity")
    device = record.get("device") or {}
    return (
        record["id"],
        agent.id,
        agent.vendor_id,
        record["channel"],
        record["type"],
        # In UTC before the driver sees it: PostgreSQL refuses offsets past 15:59 that agents may send.
        occurred_at.astimezone(timezone.utc),
        received_at.astimezone(timezone.utc),
        severity,
        SEVERITY_RANK.get(severity or "", 0),
        record.get("status"),
        _clean(record.get("host") or agent.hostname, 255),
        _clean(record.get("user"), 255),
        _clean(record.get("path")),
        record.get("sha256"),
        _clean(device.get("serial"), 255),
        body if body is not None else json.dumps(record, ensure_ascii=False, separators=(",", ":")),
        address,
        country,
        "new",
    )


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
    inserted = _insert_new(conn, rows)
    missing = [row[0] for row in rows if row[0] not in inserted]
    owners = dict(conn.execute(select(events.c.id, events.c.agent_id).where(events.c.id.in_(missing))).all()) if missing else {}
    rule_rows: list[tuple[int, str]] = []
    outbox_rows: list[dict[str, Any]] = []
    for record in records:
        event_id = record["id"]
        if event_id not in inserted:
            (result.duplicates if owners.get(event_id) == agent.id else result.conflicts).append(event_id)
            continue
        seq, severity_rank = inserted[event_id]
        result.accepted.append(event_id)
        for rule in sorted({_clean(m.get("rule"), 255) for m in record.get("matches") or [] if m.get("rule")}):
            rule_rows.append((seq, rule))
        if severity_rank >= alert_min_rank:
            result.alert_seqs.append(seq)
            outbox_rows.extend({"event_seq": seq, "target": t, "attempts": 0, "next_attempt_at": now, "failed": False} for t in alert_targets)
    if rule_rows:
        _insert_rules(conn, rule_rows)
    if outbox_rows:
        conn.execute(alert_outbox.insert(), outbox_rows)
    return result


def _insert_new(conn: Connection, rows: list[tuple[Any, ...]]) -> dict[str, tuple[int, int]]:
    """Insert ``rows`` (``_COLUMNS`` order) unless their id is stored; ``{id: (seq, severity_rank)}`` of those inserted.

    Written as driver SQL because this is the collector's hottest statement: SQLAlchemy's
    compiled INSERT ... RETURNING of 100 rows costs several milliseconds of Python per batch
    (parameter processing per value), and on PostgreSQL its 1,900 placeholders defeat psycopg's
    statement cache. PostgreSQL gets one short statement over per-column arrays (``unnest``),
    which it prepares once, passed in binary (``%b``: psycopg's text format escapes every string
    of an array in Python, 40 ms for a batch of event bodies). SQLite gets a plain executemany; the rows inserted are then those
    above the highest ``seq`` before it, which holds because ``Database.write`` has taken
    SQLite's write lock (BEGIN IMMEDIATE) and new rowids only grow past the current maximum.
    """
    columns = ", ".join(_COLUMNS)
    if conn.dialect.name == "postgresql":
        arrays = ", ".join(f"%b::{_PG_ARRAY_TYPES[c]}[]" for c in _COLUMNS)
        sql = f"INSERT INTO events ({columns}) SELECT * FROM unnest({arrays}) ON CONFLICT (id) DO NOTHING RETURNING seq, id, severity_rank"
        found = conn.exec_driver_sql(sql, tuple(list(column) for column in zip(*rows))).all()
        return {row.id: (row.seq, row.severity_rank) for row in found}
    to_db = _sqlite_time_processor(conn)
    before = conn.exec_driver_sql("SELECT coalesce(max(seq), 0) FROM events").scalar_one()
    first, second = _TIME_COLUMNS
    prepared = [(*row[:first], to_db(row[first]), to_db(row[second]), *row[second + 1 :]) for row in rows]
    placeholders = ", ".join("?" for _ in _COLUMNS)
    conn.exec_driver_sql(f"INSERT INTO events ({columns}) VALUES ({placeholders}) ON CONFLICT (id) DO NOTHING", prepared)
    found = conn.exec_driver_sql("SELECT seq, id, severity_rank FROM events WHERE seq > ?", (before,)).all()
    return {row.id: (row.seq, row.severity_rank) for row in found}


def _insert_rules(conn: Connection, rows: list[tuple[int, str]]) -> None:
    """The rule index of the events just inserted, by driver SQL for the reasons ``_insert_new`` gives."""
    if conn.dialect.name == "postgresql":
        seqs, rules = zip(*rows)
        conn.exec_driver_sql("INSERT INTO event_rules (event_seq, rule) SELECT * FROM unnest(%b::bigint[], %b::varchar[])", (list(seqs), list(rules)))
    else:
        conn.exec_driver_sql("INSERT INTO event_rules (event_seq, rule) VALUES (?, ?)", rows)


_PG_ARRAY_TYPES = {
    "vendor_id": "integer",
    "severity_rank": "smallint",
    "occurred_at": "timestamptz",
    "received_at": "timestamptz",
    **{c: "text" for c in ("path", "body")},
}
_PG_ARRAY_TYPES.update({c: "varchar" for c in _COLUMNS if c not in _PG_ARRAY_TYPES})


def _sqlite_time_processor(conn: Connection) -> Any:
    """The events table's own conversion of a UTC datetime to its SQLite storage form."""
    return events.c.occurred_at.type.bind_processor(conn.dialect) or (lambda value: value)


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
