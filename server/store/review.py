"""Events as reviewers see them: filtered keyset pages, one event with its comments, exports, and triage.

``public`` is the one place a stored record becomes what the review API, the UI, exports and
alerts show: the agent's record with the collector's own facts laid over it. Names the
collector owns (agent/events.py) that an agent wrote into its body are moved under
``agent_claims``, and an agent's ``host`` that differs from its enrolled hostname is shown as
``claimed_host``, so nothing an agent sends can pose as the collector's word, including in
rows stored before that rule existed. An egress row is the exception that proves it: ingest
rewrote its body (server/store/egress.py), so its ``egress_policy`` and ``agent_claims`` are the
collector's own; so are the ``marks`` and ``agent_claims`` of a row with mark matches (ingest always
rewrites those, server/store/marks.py) and the ``marks`` of an event the collector raised. Triage and comments change here too, each with its
audit entry in the same transaction, so the API and the UI follow one rule.

Who sees what is decided here too: every reader takes the account's ``Scope`` (server/store/scope.py)
and applies it in SQL, so an event of another vendor is not in a list, a count or an export, and its
page is a 404; a vendor lead's scope shows staff names as pseudonyms (server/pseudonyms.py) and may
not triage or comment.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Literal, get_args

from sqlalchemy import Connection, and_, exists, false, func, or_, select, tuple_

from agent.events import AGENT_CLAIMS, CLAIMED_HOST, COLLECTOR_FIELDS, EGRESS_POLICY, MARKS, SEVERITY_RANK
from server.db.tables import event_comments, event_counts, event_rules, events, users, vendors
from server.errors import Forbidden, InvalidInput, NotFound
from server.pseudonyms import Names, Pseudonyms
from server.store import audit, reveals
from server.store import marks as mark_store
from server.store import users as user_store
from server.store.cursors import SORTS, Cursor
from server.store.scope import Scope
from server.store.sql import iso
from server.store.stats import folded_upto

TriageStatus = Literal["new", "investigating", "benign", "confirmed_leak"]
TRIAGE_STATUSES: tuple[TriageStatus, ...] = get_args(TriageStatus)


@dataclass(frozen=True)
class EventFilter:
    channels: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    min_severity: str | None = None
    vendor: str | None = None
    agent: str | None = None
    user: str | None = None
    """A staff user name as the reader is shown it (a vendor lead's pseudonym or revealed name)."""
    rule: str | None = None
    statuses: tuple[str, ...] = ()
    sha256: str | None = None
    device_serial: str | None = None
    process_name: str | None = None
    """The base name of the event's process executable, exactly (``cp``, ``xclip``)."""
    destination_hosts: tuple[str, ...] = ()
    """Egress destinations' hosts, exactly, lower-cased (``github.com``)."""
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None
    prev_cursor: str | None
    """None on the first page (and on a page reached backwards that has nothing before it)."""


def base_query() -> Any:
    """Events with their vendor's name and assignee's name: the rows ``public`` shows."""
    return (
        select(events, vendors.c.name.label("vendor"), users.c.name.label("assignee"))
        .outerjoin(vendors, vendors.c.id == events.c.vendor_id)  # access events belong to no vendor
        .outerjoin(users, users.c.id == events.c.assignee_id)
    )


def _keys(sort: str) -> list[Any]:
    return [events.c.severity_rank, events.c.seq] if sort == "severity" else [events.c.seq]


def _cursor_at(sort: str, row: Any, *, backward: bool) -> str:
    return Cursor(sort, row.seq, row.severity_rank if sort == "severity" else None, backward).encode()


def names(conn: Connection, *, scope: Scope, pseudonyms: Pseudonyms | None) -> Names | None:
    """How ``scope`` is shown staff names: None for real names, else pseudonyms but for revealed names.

    Raises:
        ValueError: a pseudonymizing scope without the collector's pseudonyms (fail closed).
    """
    if not scope.pseudonymize:
        return None
    if pseudonyms is None:
        raise ValueError("a pseudonymizing scope needs the collector's pseudonyms")
    in_scope = sorted(scope.vendor_ids or ())
    revealed = {vendor_id: frozenset(reveals.revealed(conn, vendor_id)) for vendor_id in in_scope}
    staff = {vendor_id: pseudonyms.staff(vendor_id, partial(_staff, conn, vendor_id)) for vendor_id in in_scope}
    return Names(pseudonyms, revealed, staff)


def may_triage(user: user_store.User) -> bool:
    """Whether ``user`` may triage, assign or comment on events (a vendor lead only reads)."""
    return not user.is_vendor_lead


def _check_may_triage(user: user_store.User) -> None:
    if not may_triage(user):
        raise Forbidden("a vendor lead may read events but not triage, assign or comment on them")


def query(
    conn: Connection,
    *,
    scope: Scope,
    filters: EventFilter,
    limit: int,
    cursor: str | None = None,
    sort: str = "newest",
    pseudonyms: Pseudonyms | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """``limit`` events in ``sort`` order; the cursor continues after the last item (keyset paging)."""
    found = page(conn, scope=scope, filters=filters, limit=limit, cursor=cursor, sort=sort, pseudonyms=pseudonyms)
    return found.items, found.next_cursor


def page(
    conn: Connection,
    *,
    scope: Scope,
    filters: EventFilter,
    limit: int,
    cursor: str | None = None,
    sort: str = "newest",
    pseudonyms: Pseudonyms | None = None,
) -> Page:
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
    shown = names(conn, scope=scope, pseudonyms=pseudonyms)
    conditions = _conditions(conn, filters, scope=scope, names=shown)
    if position is not None:
        key = tuple_(*keys) if len(keys) > 1 else keys[0]
        value = tuple_(position.rank, position.seq) if sort == "severity" else position.seq
        # Forward on a descending sort (or backward on an ascending one) wants smaller keys.
        conditions.append(key < value if descending != backward else key > value)
    reading_descending = descending != backward
    order = [k.desc() if reading_descending else k.asc() for k in keys]
    stmt = base_query().order_by(*order).limit(limit + 1)
    if conditions:
        stmt = stmt.where(and_(*conditions))
    rows = list(conn.execute(stmt).all())
    more = len(rows) > limit
    rows = rows[:limit]
    if backward:
        rows.reverse()
    if not rows:
        return Page([], None, None)
    next_cursor: str | None
    prev_cursor: str | None
    if backward:
        next_cursor = _cursor_at(sort, rows[-1], backward=False)
        prev_cursor = _cursor_at(sort, rows[0], backward=True) if more else None
    else:
        next_cursor = _cursor_at(sort, rows[-1], backward=False) if more else None
        prev_cursor = _cursor_at(sort, rows[0], backward=True) if position is not None else None
    return Page([public(row, names=shown) for row in rows], next_cursor, prev_cursor)


def _staff(conn: Connection, vendor_id: int) -> set[str]:
    """The user names of ``vendor_id``'s events: the daily counts' keys, and the events not folded yet."""
    counted = select(event_counts.c.key).where(event_counts.c.kind == "user", event_counts.c.vendor_id == vendor_id).distinct()
    recent = select(events.c.user_name).where(events.c.vendor_id == vendor_id, events.c.seq > folded_upto(conn), events.c.user_name.is_not(None)).distinct()
    return set(conn.execute(counted).scalars()) | set(conn.execute(recent).scalars())


def _user_condition(conn: Connection, shown_name: str, *, scope: Scope, names: Names | None) -> Any:
    """Events of the user shown as ``shown_name``: for pseudonyms, the real names behind it per vendor."""
    if names is None:
        return events.c.user_name == shown_name
    per_vendor = []
    for vendor_id in sorted(scope.vendor_ids or ()):
        real = names.real_names(vendor_id, shown_name, names.staff.get(vendor_id, ()))
        if not real:  # perhaps a name newer than the kept list of staff
            real = names.real_names(vendor_id, shown_name, names.pseudonyms.staff(vendor_id, partial(_staff, conn, vendor_id), fresh=True))
        if real:
            per_vendor.append(and_(events.c.vendor_id == vendor_id, events.c.user_name.in_(sorted(real))))
    return or_(*per_vendor) if per_vendor else false()


def _conditions(conn: Connection, f: EventFilter, *, scope: Scope, names: Names | None) -> list[Any]:
    c: list[Any] = []
    in_scope = scope.where(events.c.vendor_id)
    if in_scope is not None:
        c.append(in_scope)
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
        c.append(_user_condition(conn, f.user, scope=scope, names=names))
    if f.rule:
        c.append(exists().where(event_rules.c.event_seq == events.c.seq, event_rules.c.rule == f.rule))
    if f.statuses:
        c.append(events.c.triage_status.in_(f.statuses))
    if f.sha256:
        c.append(events.c.sha256 == f.sha256)
    if f.device_serial:
        c.append(events.c.device_serial == f.device_serial)
    if f.process_name:
        c.append(events.c.process_name == f.process_name)
    if f.destination_hosts:
        c.append(events.c.destination_host.in_([host.lower() for host in f.destination_hosts]))
    if f.since:
        c.append(events.c.occurred_at >= f.since)
    if f.until:
        c.append(events.c.occurred_at < f.until)
    return c


def public(row: Any, *, names: Names | None) -> dict[str, Any]:
    """The review API's view of one event: the agent's record plus what the collector knows.

    ``row`` comes from ``base_query``; ``names`` (from ``names``) shows staff names as pseudonyms,
    None shows them as they are."""
    item = json.loads(row.body)
    if row.origin == "collector":
        item.pop("origin", None)  # rows raised before the origin column kept it in the body
    marked = mark_store.carries_marks(item)
    judged = {name: item.pop(name, None) for name in (EGRESS_POLICY, AGENT_CLAIMS)} if row.channel == "egress" or marked else {}
    if marked or row.origin == "collector":
        judged[MARKS] = item.pop(MARKS, None)
    claims = {name: item.pop(name) for name in COLLECTOR_FIELDS & item.keys()}
    if isinstance(judged.get(AGENT_CLAIMS), dict):
        claims = {**judged[AGENT_CLAIMS], **claims}
    if "agent_id" in claims and claims["agent_id"] == row.agent_id:
        del claims["agent_id"]
    claimed_host = item.pop("host", None)
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
        origin=row.origin,
    )
    if claimed_host is not None and claimed_host != row.host:
        item[CLAIMED_HOST] = claimed_host
    if claims:
        item[AGENT_CLAIMS] = claims
    if judged.get(EGRESS_POLICY) is not None:
        item[EGRESS_POLICY] = judged[EGRESS_POLICY]
    if judged.get(MARKS) is not None:
        item[MARKS] = judged[MARKS]
    item.setdefault("path", None)
    item.setdefault("sha256", None)
    item.setdefault("matches", [])
    item.setdefault("device", None)
    item.setdefault("process", None)
    item.setdefault("enforcement", None)
    if row.channel == "egress":  # stored only when sent (server/api/schemas.py), shown as null otherwise
        for name in ("destination", "repository", "refs", "transfer"):
            item.setdefault(name, None)
    if names is not None:
        names.apply(item, row.vendor_id)
    return item


def by_seq(conn: Connection, *, seq: int) -> dict[str, Any] | None:
    """One event as shown, by its collector sequence number: for the alert forwarder, which sends
    the customer's own view (every vendor, real names) to the customer's SIEM, not to an account."""
    row = conn.execute(base_query().where(events.c.seq == seq)).first()
    return public(row, names=None) if row is not None else None


def _row_by_id(conn: Connection, event_id: str, *, scope: Scope) -> Any:
    """The event's row; NotFound when it does not exist or is out of ``scope`` (the same answer,
    so a scoped account cannot tell another vendor's event ids from made-up ones)."""
    row = conn.execute(base_query().where(events.c.id == event_id)).first()
    if row is None or not scope.allows(row.vendor_id):
        raise NotFound(f"no event {event_id!r}")
    return row


def get(conn: Connection, *, scope: Scope, event_id: str, pseudonyms: Pseudonyms | None = None) -> dict[str, Any]:
    """One event with its comments and how many other events in ``scope`` share its file or device."""
    row = _row_by_id(conn, event_id, scope=scope)
    item = public(row, names=names(conn, scope=scope, pseudonyms=pseudonyms))
    comments = conn.execute(
        select(event_comments.c.body, event_comments.c.created_at, users.c.name)
        .join(users, users.c.id == event_comments.c.user_id)
        .where(event_comments.c.event_seq == row.seq)
        .order_by(event_comments.c.id)
    )
    item["comments"] = [{"author": c.name, "body": c.body, "created_at": iso(c.created_at)} for c in comments]
    related: dict[str, int] = {}
    in_scope = scope.where(events.c.vendor_id)
    for key, column, value in (("same_sha256", events.c.sha256, row.sha256), ("same_device", events.c.device_serial, row.device_serial)):
        conditions = [column == value, events.c.seq != row.seq, *([in_scope] if in_scope is not None else [])]
        related[key] = conn.execute(select(func.count()).where(*conditions)).scalar_one() if value else 0
    item["related"] = related
    return item


@dataclass(frozen=True)
class TriageChange:
    """What a reviewer asks of one or more events; None leaves a field as it is."""

    status: TriageStatus | None = None
    assignee: str | None = None
    """A user's name."""
    clear_assignee: bool = False


def set_triage(
    conn: Connection,
    *,
    event_ids: Sequence[str],
    change: TriageChange,
    actor: user_store.User,
    address: str | None,
    now: datetime,
    bulk: bool = False,
) -> list[str]:
    """Apply ``change`` to every event of ``event_ids`` and audit it; returns the ids it changed.

    The audit rule, the same for the API and the UI: a request that changed something is one
    entry (``event.triage`` with before and after for one event's page or PATCH,
    ``event.triage_bulk`` with the changed ids for a ``bulk`` request from the list); a request
    that changed nothing is not an action and is not recorded. An unknown event or assignee, or
    one out of the actor's scope, refuses the whole request; a vendor lead may not triage at all.
    """
    _check_may_triage(actor)
    if not bulk and len(event_ids) != 1:
        raise ValueError("one event at a time unless bulk")
    if change.status is not None and change.status not in TRIAGE_STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(TRIAGE_STATUSES)}")
    values: dict[str, Any] = {}
    if change.status is not None:
        values["triage_status"] = change.status
    if change.clear_assignee:
        values["assignee_id"] = None
    elif change.assignee is not None:
        values["assignee_id"] = user_store.get(conn, name=change.assignee).id
    rows = [_row_by_id(conn, event_id, scope=actor.scope) for event_id in dict.fromkeys(event_ids)]
    changed: list[tuple[Any, dict[str, Any], dict[str, Any]]] = []
    for row in rows:
        before = {"status": row.triage_status, "assignee": row.assignee}
        after = {
            "status": change.status or row.triage_status,
            "assignee": None if change.clear_assignee else (change.assignee if change.assignee is not None else row.assignee),
        }
        if after != before:
            changed.append((row, before, after))
    if not changed:
        return []
    conn.execute(events.update().where(events.c.seq.in_([row.seq for row, _, _ in changed])).values(**values))
    ids = [row.id for row, _, _ in changed]
    if not bulk:
        _, before, after = changed[0]
        audit.append(conn, actor=actor.name, action="event.triage", target=ids[0], details={"before": before, "after": after}, address=address, now=now)
    else:
        details: dict[str, Any] = {"ids": ids, "status": change.status}
        if change.assignee is not None or change.clear_assignee:
            details["assignee"] = None if change.clear_assignee else change.assignee
        audit.append(conn, actor=actor.name, action="event.triage_bulk", target=f"{len(ids)} events", details=details, address=address, now=now)
    return ids


def add_comment(conn: Connection, *, event_id: str, author: user_store.User, body: str, address: str | None, now: datetime) -> None:
    """A reviewer's comment on an event, audited (its length, never its text) in the same transaction."""
    _check_may_triage(author)
    row = _row_by_id(conn, event_id, scope=author.scope)
    conn.execute(event_comments.insert().values(event_seq=row.seq, user_id=author.id, body=body, created_at=now))
    audit.append(conn, actor=author.name, action="event.comment", target=event_id, details={"length": len(body)}, address=address, now=now)


def iter_for_export(conn: Connection, *, scope: Scope, filters: EventFilter, pseudonyms: Pseudonyms | None = None, batch: int = 1000) -> Any:
    """Every matching event in ``scope``, oldest first, fetched in keyset batches (flat memory)."""
    after = 0
    shown = names(conn, scope=scope, pseudonyms=pseudonyms)
    conditions = _conditions(conn, filters, scope=scope, names=shown)
    while True:
        stmt = base_query().where(and_(events.c.seq > after, *conditions)).order_by(events.c.seq).limit(batch)
        rows = conn.execute(stmt).all()
        if not rows:
            return
        for row in rows:
            yield public(row, names=shown)
        after = rows[-1].seq
