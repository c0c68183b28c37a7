"""Ingest: agents' event batches stored once each, and the events the collector raises itself.

Ingest inserts with ON CONFLICT DO NOTHING on the agent's event id, so a batch retried after a
lost reply (or sent by two collectors' worth of retries) stores each event once; the ids that
were already there are reported back as duplicates. An id that exists under a *different*
agent is a conflict, never silently merged. Everything one batch writes (events, rule index,
alert outbox) commits in the caller's single transaction.

The columns the collector owns come from the collector: the agent and vendor from the
credential, the host from the enrollment (the agent's ``host`` stays in the body as its
claim), and the origin from who stored the event (agent/events.py holds the contract).
Records that carry an ``enforcement`` object go to the quarantine store's hook once, when stored.
Egress records are judged against their vendor's allowed remotes first (server/store/egress.py),
which sets their severity and may leave them unstored (``suppressed``); only batches holding
egress records pay for that. Records with mark matches (watermarks and canaries the agent read)
go through server/store/marks.py: their payloads resolved to registered marks and dropped from the
stored body, and a mark of another seat or vendor raises ``agent.mark_elsewhere`` once the batch
is stored; only batches holding mark matches pay for that.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from agent import events as contract
from agent.events import SEVERITY_RANK, Origin
from server.db.tables import alert_outbox, events
from server.siem.fields import exe_name
from server.store import egress, quarantine, watchlist
from server.store import marks as mark_store
from server.store.agents import AgentIdentity
from server.store.sql import iso


@dataclass
class IngestResult:
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    alert_seqs: list[int] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)
    """Egress events to an allowed place the vendor does not want reported: acknowledged, not stored."""


def _clean(value: Any, limit: int = 4096) -> str | None:
    """A column copy of an agent string: PostgreSQL text cannot hold NUL, and columns are bounded."""
    if value is None:
        return None
    return str(value).replace("\x00", "")[:limit]


# The columns ingest writes, in the order of the tuples built by ``_row``.
_COLUMNS = (
    "id", "agent_id", "vendor_id", "channel", "type", "occurred_at", "received_at", "severity", "severity_rank", "status",
    "host", "user_name", "path", "sha256", "device_serial", "process_name", "destination_host", "body", "source_ip",
    "source_country", "triage_status", "origin",
)  # fmt: skip
_TIME_COLUMNS = (_COLUMNS.index("occurred_at"), _COLUMNS.index("received_at"))


def _row(
    record: dict[str, Any],
    *,
    body: str | None,
    agent: AgentIdentity | None,
    received_at: datetime,
    occurred_at: datetime,
    address: str | None,
    country: str | None,
    origin: Origin,
) -> tuple[Any, ...]:
    severity = record.get("severity")
    device = record.get("device") or {}
    process = record.get("process")
    destination = record.get("destination")
    destination_host = destination.get("host") if isinstance(destination, dict) else None
    return (
        record["id"],
        agent.id if agent else None,  # None: the collector's access events, about no agent
        agent.vendor_id if agent else None,
        record["channel"],
        record["type"],
        # In UTC before the driver sees it: PostgreSQL refuses offsets past 15:59 that agents may send.
        occurred_at.astimezone(UTC),
        received_at.astimezone(UTC),
        severity,
        SEVERITY_RANK.get(severity or "", 0),
        record.get("status"),
        _clean(agent.hostname, 255) if agent else None,
        _clean(record.get("user"), 255),
        _clean(record.get("path")),
        record.get("sha256"),
        _clean(device.get("serial"), 255),
        _clean(exe_name(process.get("exe")) if isinstance(process, dict) else None, 255),
        _clean(destination_host.lower(), 255) if isinstance(destination_host, str) else None,
        body if body is not None else json.dumps(record, ensure_ascii=False, separators=(",", ":")),
        address,
        country,
        "new",
        origin,
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
    watch_min_rank: int | None = None,
    origin: Origin = "agent",
    marks_key: Callable[[], bytes] | None = None,
) -> IngestResult:
    """Store a validated batch; ``occurred`` holds each record's parsed ``occurred_at`` and
    ``bodies`` (optional) each record already encoded as compact JSON. ``origin`` is who made
    the records: an agent's batch, or the collector's own event (``raise_agent_event``).
    ``watch_min_rank`` (lower than ``alert_min_rank``) is the alert threshold of watchlisted users' events.
    ``marks_key`` gives the marks key (server/keys.py) when a batch holds a watermark payload."""
    result = IngestResult()
    unique: dict[str, tuple[dict[str, Any], datetime, str | None]] = {}
    encoded: Sequence[str | None] = bodies or [None] * len(records)
    for record, occurred_at, body in zip(records, occurred, encoded):
        if record["id"] in unique:
            result.duplicates.append(record["id"])
        else:
            unique[record["id"]] = (record, occurred_at, body)
    if any(record["channel"] == egress.CHANNEL for record, _, _ in unique.values()):
        unique, result.suppressed = egress.apply(conn, vendor_id=agent.vendor_id, entries=unique)
    elsewhere: dict[str, list[dict[str, Any]]] = {}
    if origin == "agent" and any(r.get("matches") for r, _, _ in unique.values()):
        unique, elsewhere = mark_store.on_ingest(conn, key=marks_key, agent=agent, entries=unique)
    if not unique:
        return result
    records = [record for record, _, _ in unique.values()]
    rows = [
        _row(r, body=b, agent=agent, received_at=now, occurred_at=t, address=address, country=country, origin=origin)
        for r, t, b in unique.values()
    ]
    rules = {record["id"]: _rules(record) for record in records}
    inserted = _insert_new(conn, rows, rules)
    missing = [row[0] for row in rows if row[0] not in inserted]
    owners = dict(conn.execute(select(events.c.id, events.c.agent_id).where(events.c.id.in_(missing))).all()) if missing else {}
    outbox_rows: list[dict[str, Any]] = []
    watch = watch_min_rank is not None and watch_min_rank < alert_min_rank
    watched_users = watchlist.watched(conn, now=now) if watch else set()
    for record in records:
        event_id = record["id"]
        if event_id not in inserted:
            (result.duplicates if owners.get(event_id) == agent.id else result.conflicts).append(event_id)
            continue
        seq, severity_rank = inserted[event_id]
        result.accepted.append(event_id)
        watched = watch and severity_rank >= (watch_min_rank or 0) and watchlist.is_watched(watched_users, agent.vendor_id, _clean(record.get("user"), 255))
        if severity_rank >= alert_min_rank or watched:
            result.alert_seqs.append(seq)
            outbox_rows.extend({"event_seq": seq, "target": t, "attempts": 0, "next_attempt_at": now, "failed": False} for t in alert_targets)
    if outbox_rows:
        conn.execute(alert_outbox.insert(), outbox_rows)
    enforced = [record for record in records if "enforcement" in record and record["id"] in inserted]
    if enforced:
        quarantine.on_ingest(conn, agent=agent, records=enforced, now=now)
    for record in records:
        found = elsewhere.get(record["id"])
        if found and record["id"] in inserted:
            _, raised = _collector_event(
                conn,
                agent=agent,
                kind=contract.MARK_ELSEWHERE,
                details=mark_store.elsewhere_details(record, record["id"]),
                collector_fields={contract.MARKS: found},
                now=now,
                severity="high",
                address=address,
                country=country,
                alert_targets=alert_targets,
                alert_min_rank=alert_min_rank,
            )
            result.alert_seqs.extend(raised.alert_seqs)
    return result


def _rules(record: Mapping[str, Any]) -> list[str]:
    """The event's rule index entries: each matched rule's name once."""
    names = {_clean(m.get("rule"), 255) for m in record.get("matches") or () if m.get("rule")}
    return sorted(name for name in names if name)


def _insert_new(conn: Connection, rows: list[tuple[Any, ...]], rules: Mapping[str, Sequence[str]]) -> dict[str, tuple[int, int]]:
    """Insert ``rows`` (``_COLUMNS`` order) unless their id is stored, and the rule index (``rules``
    by event id) of those inserted; ``{id: (seq, severity_rank)}`` of those inserted.

    Written as driver SQL because this is the collector's hottest statement: SQLAlchemy's
    compiled INSERT ... RETURNING of 100 rows costs several milliseconds of Python per batch
    (parameter processing per value), and on PostgreSQL its 1,900 placeholders defeat psycopg's
    statement cache. PostgreSQL gets one short statement over per-column arrays (``unnest``),
    which it prepares once, passed in binary (``%b``: psycopg's text format escapes every string
    of an array in Python, 40 ms for a batch of event bodies); the rule index is inserted by the
    same statement (a second one cost a round trip and its own arrays). SQLite gets an executemany.
    """
    if conn.dialect.name == "postgresql":
        return _insert_new_postgresql(conn, rows, rules)
    inserted = _insert_new_sqlite(conn, rows)
    _insert_rules(conn, [(inserted[event_id][0], rule) for event_id, names in rules.items() if event_id in inserted for rule in names])
    return inserted


def _insert_new_postgresql(conn: Connection, rows: list[tuple[Any, ...]], rules: Mapping[str, Sequence[str]]) -> dict[str, tuple[int, int]]:
    columns = ", ".join(_COLUMNS)
    arrays = ", ".join(f"%b::{_PG_ARRAY_TYPES[c]}[]" for c in _COLUMNS)
    rule_ids = [event_id for event_id, names in rules.items() for _ in names]
    rule_names = [name for names in rules.values() for name in names]
    sql = (
        f"WITH new AS (INSERT INTO events ({columns}) SELECT * FROM unnest({arrays}) ON CONFLICT (id) DO NOTHING RETURNING seq, id, severity_rank), "
        "indexed AS (INSERT INTO event_rules (event_seq, rule) SELECT new.seq, r.rule FROM new JOIN unnest(%b::varchar[], %b::varchar[]) AS r(id, rule) ON r.id = new.id) "
        "SELECT seq, id, severity_rank FROM new"
    )
    found = conn.exec_driver_sql(sql, (*(list(column) for column in zip(*rows)), rule_ids, rule_names)).all()
    return {row.id: (row.seq, row.severity_rank) for row in found}


_SEVERITY_RANK_AT = _COLUMNS.index("severity_rank")
_SQLITE_INSERT = f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)}) ON CONFLICT (id) DO NOTHING"


def _insert_new_sqlite(conn: Connection, rows: list[tuple[Any, ...]]) -> dict[str, tuple[int, int]]:
    """One executemany (a multi-row INSERT cost SQLite 40% more CPU for 100 rows). New rowids
    (``seq``) are one above the largest so far, in row order, and ``Database.write`` holds SQLite's
    write lock (BEGIN IMMEDIATE), so when every row went in they are the ``rowcount`` seqs up to
    ``last_insert_rowid()``; only a batch with ids already stored (a retry) reads back which went in."""
    if not rows:
        return {}
    first, second = _TIME_COLUMNS
    received: dict[datetime, str] = {}  # one arrival time for a whole batch: converted once
    prepared = [
        (*row[:first], _sqlite_time(row[first]), received.get(row[second]) or received.setdefault(row[second], _sqlite_time(row[second])), *row[second + 1 :])
        for row in rows
    ]
    count = conn.exec_driver_sql(_SQLITE_INSERT, prepared).rowcount
    if not count:
        return {}
    last = conn.exec_driver_sql("SELECT last_insert_rowid()").scalar_one()
    if count == len(rows):
        return {row[0]: (last - count + 1 + n, row[_SEVERITY_RANK_AT]) for n, row in enumerate(rows)}
    found = conn.exec_driver_sql("SELECT seq, id, severity_rank FROM events WHERE seq > ?", (last - count,)).all()
    return {row.id: (row.seq, row.severity_rank) for row in found}


def _sqlite_time(value: datetime) -> str:
    """A UTC datetime as the events table stores it on SQLite (``UtcDateTime`` through SQLAlchemy's
    SQLite DATETIME: naive UTC, microseconds always written), without a processor call per value."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _insert_rules(conn: Connection, rows: list[tuple[int, str]]) -> None:
    """The rule index of the events just inserted on SQLite."""
    if rows:
        conn.exec_driver_sql("INSERT INTO event_rules (event_seq, rule) VALUES (?, ?)", rows)


_PG_ARRAY_TYPES = {
    "vendor_id": "integer",
    "severity_rank": "smallint",
    "occurred_at": "timestamptz",
    "received_at": "timestamptz",
    **{c: "text" for c in ("path", "body")},
}
_PG_ARRAY_TYPES.update({c: "varchar" for c in _COLUMNS if c not in _PG_ARRAY_TYPES})


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
    collector_fields: Mapping[str, Any] | None = None,
) -> str:
    """An event the collector itself observed about an agent (``agent.offline``, ``agent.unexpected_ip``);
    its origin column says so, which no agent's batch can (agents may not submit these types).
    ``collector_fields`` are the collector's own names (``marks``), which review shows as the
    collector's word on rows of this origin."""
    event_id, _ = _collector_event(
        conn, agent=agent, kind=kind, details=details, now=now, severity=severity, address=address, country=country,
        alert_targets=alert_targets, alert_min_rank=alert_min_rank, collector_fields=collector_fields,
    )  # fmt: skip
    return event_id


def _collector_event(
    conn: Connection,
    *,
    agent: AgentIdentity,
    kind: str,
    details: dict[str, Any],
    now: datetime,
    severity: str | None,
    address: str | None,
    country: str | None,
    alert_targets: Sequence[str],
    alert_min_rank: int,
    collector_fields: Mapping[str, Any] | None,
) -> tuple[str, IngestResult]:
    if not contract.collector_raised(kind):
        raise ValueError(f"{kind!r} is not an event type the collector raises")
    if contract.COLLECTOR_FIELDS & details.keys():
        raise ValueError(f"details may not hold the names the event's own columns fill: {sorted(contract.COLLECTOR_FIELDS & details.keys())}")
    own = dict(collector_fields or {})
    if own.keys() - {contract.MARKS}:
        raise ValueError(f"the collector sets no {sorted(own.keys() - {contract.MARKS})} on its own events")
    record = {
        **details,
        **own,
        "schema": contract.SCHEMA_VERSION,
        "id": str(uuid.uuid4()),
        "type": kind,
        "channel": contract.COLLECTOR_TYPES.get(kind, "agent"),
        "occurred_at": iso(now),
        "host": agent.hostname,
        "severity": severity,
        "matches": [],
    }
    stored = ingest(
        conn,
        agent=agent,
        records=[record],
        occurred=[now],
        address=address,
        country=country,
        now=now,
        alert_targets=alert_targets,
        alert_min_rank=alert_min_rank,
        origin="collector",
    )
    return record["id"], stored


def raise_access_event(
    conn: Connection,
    *,
    kind: str,
    details: dict[str, Any],
    now: datetime,
    severity: str,
    address: str | None,
    country: str | None,
    alert_targets: Sequence[str] = (),
    alert_min_rank: int = 5,
) -> tuple[str, int | None]:
    """An event the collector raises about its own reviewers and admins (channel ``access``):
    no agent and no vendor, so only admins and unscoped reviewers see it; alerts go through the
    same outbox as agent events. Returns (event id, its seq when it was queued for alerting)."""
    if contract.COLLECTOR_TYPES.get(kind) != contract.ACCESS_CHANNEL:
        raise ValueError(f"{kind!r} is not an access event type")
    if contract.COLLECTOR_FIELDS & details.keys():
        raise ValueError(f"details may not hold the names the event's own columns fill: {sorted(contract.COLLECTOR_FIELDS & details.keys())}")
    record = {
        **details,
        "schema": contract.SCHEMA_VERSION, "id": str(uuid.uuid4()), "type": kind, "channel": contract.ACCESS_CHANNEL,
        "occurred_at": iso(now), "severity": severity, "matches": [],
    }  # fmt: skip
    row = _row(record, body=None, agent=None, received_at=now, occurred_at=now, address=address, country=country, origin="collector")
    seq, rank = _insert_new(conn, [row], {})[record["id"]]
    if rank < alert_min_rank or not alert_targets:
        return record["id"], None
    conn.execute(alert_outbox.insert(), [{"event_seq": seq, "target": t, "attempts": 0, "next_attempt_at": now, "failed": False} for t in alert_targets])
    return record["id"], seq
