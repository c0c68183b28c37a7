"""Cases: events a reviewer groups into one investigation, with its status, assignee, severity, due date and comments.

The rules of who sees and changes a case live here, so the API, the UI and the evidence export
follow one of them. A scoped account sees a case only when at least one of its events is in its
scope, and then only those events (counts, severity and history too); anything else answers
NotFound, so existence does not leak. A vendor lead reads and comments (never internally) but
changes nothing else. Every change is one audit entry with target ``case:<id>``, written in the
same transaction; those entries are the case's history. ``severity_rank`` is kept current (the
set severity, else the worst of the case's events) so the list sorts by a column. Lists and
pages of cases are server/store/case_lists.py's; the history's reading rules case_history.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import Connection, and_, exists, func, select

from agent.events import SEVERITIES, SEVERITY_RANK
from server.db.tables import case_comments, case_events, cases, events, users, vendors
from server.errors import Forbidden, InvalidInput, NotFound
from server.pseudonyms import Pseudonyms
from server.store import audit, case_history, reveals, review
from server.store import users as user_store
from server.store.scope import Scope
from server.store.sql import iso
from server.store.users import User

CaseStatus = Literal["open", "investigating", "closed"]
STATUSES: tuple[CaseStatus, ...] = get_args(CaseStatus)
Outcome = Literal["benign", "policy_breach", "confirmed_leak"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
MAX_EVENTS = 2000
"""Events one case may hold: its page and its evidence file show every one."""

EventRef = str | int
"""An event's id (str) or its collector sequence number (int)."""


@dataclass(frozen=True)
class CaseChange:
    """What a reviewer asks of a case; None (and False) leaves a field as it is."""

    title: str | None = None
    status: str | None = None
    outcome: str | None = None
    """Required when closing; only a closed case has one."""
    assignee: str | None = None
    clear_assignee: bool = False
    severity: str | None = None
    clear_severity: bool = False
    """Back to the worst of the case's events."""
    due_at: datetime | None = None
    clear_due: bool = False


def _may_change(actor: User) -> None:
    if actor.is_vendor_lead:
        raise Forbidden("a vendor lead may read cases and comment on them, not change them")


def visible_events(scope: Scope) -> Any:
    """The condition on ``events`` of what ``scope`` may see, or None."""
    return scope.where(events.c.vendor_id)


def case_visible(scope: Scope) -> Any | None:
    """A condition on ``cases``: at least one of its events is in scope (None: every case is visible)."""
    condition = visible_events(scope)
    if condition is None:
        return None
    return exists().where(case_events.c.case_id == cases.c.id, case_events.c.event_seq == events.c.seq, condition)


def _case_row(conn: Connection, case_id: int, scope: Scope) -> Any:
    query = select(cases, users.c.name.label("assignee")).outerjoin(users, users.c.id == cases.c.assignee_id).where(cases.c.id == case_id)
    visible = case_visible(scope)
    if visible is not None:
        query = query.where(visible)
    row = conn.execute(query).first()
    if row is None:
        raise NotFound(f"no case {case_id}")
    return row


def resolve_events(conn: Connection, refs: Sequence[EventRef], scope: Scope) -> list[Any]:
    """The rows (seq, id, vendor_id, user_name) of ``refs`` in order, once each; one unknown or out of scope refuses all."""
    ids = [ref for ref in refs if isinstance(ref, str)]
    seqs = [ref for ref in refs if isinstance(ref, int)]
    found: dict[EventRef, Any] = {}
    columns = (events.c.seq, events.c.id, events.c.vendor_id, events.c.user_name)
    condition = visible_events(scope)
    for column, values in ((events.c.id, ids), (events.c.seq, seqs)):
        for start in range(0, len(values), 500):
            query = select(*columns).where(column.in_(values[start:start + 500]))
            if condition is not None:
                query = query.where(condition)
            for row in conn.execute(query):
                found[row.id if column is events.c.id else row.seq] = row
    missing = [ref for ref in refs if ref not in found]
    if missing:
        raise NotFound(f"no event {missing[0]!r}")
    rows: dict[int, Any] = {}
    for ref in refs:
        rows.setdefault(found[ref].seq, found[ref])
    return list(rows.values())


def _refresh(conn: Connection, case_id: int, now: datetime) -> None:
    """Recount the case's events and recompute its effective severity rank."""
    count, worst = conn.execute(
        select(func.count(), func.coalesce(func.max(events.c.severity_rank), 0))
        .select_from(case_events.join(events, events.c.seq == case_events.c.event_seq))
        .where(case_events.c.case_id == case_id)
    ).one()
    severity = conn.execute(select(cases.c.severity).where(cases.c.id == case_id)).scalar_one()
    rank = SEVERITY_RANK[severity] if severity else int(worst)
    conn.execute(cases.update().where(cases.c.id == case_id).values(event_count=count, severity_rank=rank, updated_at=now))


def _assignee_id(conn: Connection, name: str) -> int:
    user = user_store.get(conn, name=name)
    if user.is_vendor_lead:
        raise InvalidInput("a case is assigned to a customer reviewer or admin, not a vendor lead")
    return user.id


def _check_severity(name: str | None) -> None:
    if name is not None and name not in SEVERITY_RANK:
        raise InvalidInput(f"severity must be one of {', '.join(SEVERITIES)}")


def create(
    conn: Connection,
    *,
    title: str,
    event_refs: Sequence[EventRef],
    actor: User,
    scope: Scope,
    address: str | None,
    now: datetime,
    assignee: str | None = None,
    severity: str | None = None,
    due_at: datetime | None = None,
) -> int:
    """A new open case of ``event_refs`` (at least one, all visible to ``scope``); returns its id."""
    _may_change(actor)
    if not title.strip():
        raise InvalidInput("a case needs a title")
    if not event_refs:
        raise InvalidInput("a case starts with at least one event")
    if len(event_refs) > MAX_EVENTS:
        raise InvalidInput(f"a case holds at most {MAX_EVENTS} events")
    _check_severity(severity)
    rows = resolve_events(conn, event_refs, scope)
    values = dict(
        title=title.strip(), status="open", severity=severity, severity_rank=0, due_at=due_at, event_count=0,
        assignee_id=_assignee_id(conn, assignee) if assignee else None, created_by=actor.name, created_at=now, updated_at=now,
    )  # fmt: skip
    case_id = int(conn.execute(cases.insert().values(**values).returning(cases.c.id)).scalar_one())
    conn.execute(case_events.insert(), [{"case_id": case_id, "event_seq": row.seq, "added_by": actor.name, "added_at": now} for row in rows])
    _refresh(conn, case_id, now)
    details = {"title": values["title"], "events": [row.id for row in rows], "assignee": assignee, "severity": severity, "due_at": iso(due_at) if due_at else None}
    audit.append(conn, actor=actor.name, action="case.create", target=f"case:{case_id}", details=details, address=address, now=now)
    return case_id


def add_events(
    conn: Connection, *, case_id: int, event_refs: Sequence[EventRef], actor: User, scope: Scope, address: str | None, now: datetime
) -> list[str]:
    """Add events to a case; returns the ids that were not in it yet (audited when there are any)."""
    _may_change(actor)
    _case_row(conn, case_id, scope)
    if not event_refs:
        raise InvalidInput("choose at least one event")
    rows = resolve_events(conn, event_refs, scope)
    held = {seq for (seq,) in conn.execute(select(case_events.c.event_seq).where(case_events.c.case_id == case_id, case_events.c.event_seq.in_([r.seq for r in rows])))}
    new = [row for row in rows if row.seq not in held]
    if not new:
        return []
    total = conn.execute(select(cases.c.event_count).where(cases.c.id == case_id)).scalar_one()
    if total + len(new) > MAX_EVENTS:
        raise InvalidInput(f"a case holds at most {MAX_EVENTS} events")
    conn.execute(case_events.insert(), [{"case_id": case_id, "event_seq": row.seq, "added_by": actor.name, "added_at": now} for row in new])
    _refresh(conn, case_id, now)
    ids = [row.id for row in new]
    audit.append(conn, actor=actor.name, action="case.events_add", target=f"case:{case_id}", details={"events": ids}, address=address, now=now)
    return ids


def remove_event(conn: Connection, *, case_id: int, event_ref: EventRef, actor: User, scope: Scope, address: str | None, now: datetime) -> None:
    """Take one event out of a case (the event itself and its triage stay as they are)."""
    _may_change(actor)
    _case_row(conn, case_id, scope)
    (row,) = resolve_events(conn, [event_ref], scope)
    gone = conn.execute(case_events.delete().where(case_events.c.case_id == case_id, case_events.c.event_seq == row.seq)).rowcount
    if not gone:
        raise NotFound(f"event {row.id!r} is not in case {case_id}")
    _refresh(conn, case_id, now)
    audit.append(conn, actor=actor.name, action="case.events_remove", target=f"case:{case_id}", details={"events": [row.id]}, address=address, now=now)


def update(conn: Connection, *, case_id: int, change: CaseChange, actor: User, scope: Scope, address: str | None, now: datetime) -> bool:
    """Apply ``change``; audited with before and after when it changed something (returns whether it did).

    Closing needs an outcome and only a closed case has one; reopening clears it.
    """
    _may_change(actor)
    row = _case_row(conn, case_id, scope)
    if change.status is not None and change.status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
    if change.outcome is not None and change.outcome not in OUTCOMES:
        raise InvalidInput(f"outcome must be one of {', '.join(OUTCOMES)}")
    _check_severity(change.severity)
    if change.title is not None and not change.title.strip():
        raise InvalidInput("a case needs a title")
    status = change.status or row.status
    if status == "closed" and not (change.outcome or (row.status == "closed" and row.outcome)):
        raise InvalidInput("closing a case needs an outcome: " + ", ".join(OUTCOMES))
    if status != "closed" and change.outcome is not None:
        raise InvalidInput("only a closed case has an outcome")
    before = {
        "title": row.title, "status": row.status, "outcome": row.outcome, "assignee": row.assignee,
        "severity": row.severity, "due_at": iso(row.due_at) if row.due_at else None,
    }  # fmt: skip
    after = dict(before)
    if change.title is not None:
        after["title"] = change.title.strip()
    after["status"] = status
    after["outcome"] = (change.outcome or row.outcome) if status == "closed" else None
    if change.clear_assignee:
        after["assignee"] = None
    elif change.assignee is not None:
        after["assignee"] = change.assignee
    if change.clear_severity:
        after["severity"] = None
    elif change.severity is not None:
        after["severity"] = change.severity
    if change.clear_due:
        after["due_at"] = None
    elif change.due_at is not None:
        after["due_at"] = iso(change.due_at)
    changed = {key for key in before if before[key] != after[key]}
    if not changed:
        return False
    values: dict[str, Any] = {"title": after["title"], "status": status, "outcome": after["outcome"], "severity": after["severity"], "updated_at": now}
    if "assignee" in changed:
        values["assignee_id"] = _assignee_id(conn, after["assignee"]) if after["assignee"] else None
    if "due_at" in changed:
        values["due_at"] = None if change.clear_due else change.due_at
    if "status" in changed:
        values["closed_at"] = now if status == "closed" else None
    conn.execute(cases.update().where(cases.c.id == case_id).values(**values))
    if "severity" in changed:
        _refresh(conn, case_id, now)
    details = {"before": {key: before[key] for key in sorted(changed)}, "after": {key: after[key] for key in sorted(changed)}}
    audit.append(conn, actor=actor.name, action="case.update", target=f"case:{case_id}", details=details, address=address, now=now)
    return True


def add_comment(
    conn: Connection, *, case_id: int, body: str, internal: bool, actor: User, scope: Scope, address: str | None, now: datetime
) -> int:
    """A comment on a case; ``internal`` ones are the customer's side only. Audited by length, never text."""
    if internal and actor.is_vendor_lead:
        raise Forbidden("a vendor lead's comments are seen by both sides; internal comments are the customer's")
    if not body.strip():
        raise InvalidInput("write a comment first")
    _case_row(conn, case_id, scope)
    comment_id = int(
        conn.execute(
            case_comments.insert().values(case_id=case_id, user_id=actor.id, body=body, internal=internal, created_at=now).returning(case_comments.c.id)
        ).scalar_one()
    )
    conn.execute(cases.update().where(cases.c.id == case_id).values(updated_at=now))
    details = {"comment": comment_id, "internal": internal, "length": len(body)}
    audit.append(conn, actor=actor.name, action="case.comment", target=f"case:{case_id}", details=details, address=address, now=now)
    return comment_id


# Reading


def _severity_name(rank: int) -> str | None:
    return SEVERITIES[rank - 1] if rank else None


def visible_stats(conn: Connection, case_ids: Sequence[int], scope: Scope) -> dict[int, tuple[int, int]]:
    """(count, worst rank) of each case's events that ``scope`` sees; one grouped query for a page.

    Grouped by case and vendor and filtered here rather than in SQL: with the vendor condition in
    the query, SQLite starts from the vendor's index over all its events (0.8 s at 300,000 events)
    instead of from the page's few case ids.
    """
    if not case_ids:
        return {}
    query = (
        select(case_events.c.case_id, events.c.vendor_id, func.count(), func.coalesce(func.max(events.c.severity_rank), 0))
        .select_from(case_events.join(events, events.c.seq == case_events.c.event_seq))
        .where(case_events.c.case_id.in_(list(case_ids)))
        .group_by(case_events.c.case_id, events.c.vendor_id)
    )
    stats: dict[int, tuple[int, int]] = {}
    for case_id, vendor_id, count, worst in conn.execute(query):
        if scope.allows(vendor_id):
            before = stats.get(int(case_id), (0, 0))
            stats[int(case_id)] = (before[0] + int(count), max(before[1], int(worst)))
    return stats


def summary(row: Any, stats: tuple[int, int] | None, scope: Scope, now: datetime) -> dict[str, Any]:
    """A case as lists show it. A scoped account's count and severity are of the events it sees."""
    if scope.unrestricted or stats is None:
        count, rank = row.event_count, row.severity_rank
    else:
        count, rank = stats[0], SEVERITY_RANK[row.severity] if row.severity else stats[1]
    return {
        "id": row.id,
        "title": row.title,
        "status": row.status,
        "outcome": row.outcome,
        "assignee": row.assignee,
        "severity": _severity_name(rank),
        "severity_set": row.severity,
        "due_at": iso(row.due_at) if row.due_at else None,
        "overdue": row.due_at is not None and row.status != "closed" and row.due_at < now,
        "event_count": count,
        "created_by": row.created_by,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "closed_at": iso(row.closed_at) if row.closed_at else None,
    }


def event_rows(conn: Connection, *, case_id: int, scope: Scope) -> list[Any]:
    """The case's events that ``scope`` sees, as review rows in time order (for ``review.public``)."""
    query = (
        review.base_query()
        .join(case_events, case_events.c.event_seq == events.c.seq)
        .where(case_events.c.case_id == case_id)
        .order_by(events.c.occurred_at, events.c.seq)
    )
    condition = visible_events(scope)
    if condition is not None:
        query = query.where(condition)
    return list(conn.execute(query))


def _comments(conn: Connection, case_id: int, actor: User) -> list[dict[str, Any]]:
    """The comments ``actor`` may read: never internal ones for a lead, and a vendor-scoped author's
    only when the reader shares a vendor with them (case_history.author_visible)."""
    query = (
        select(case_comments.c.id, case_comments.c.body, case_comments.c.internal, case_comments.c.created_at, users.c.name, users.c.vendor_ids)
        .join(users, users.c.id == case_comments.c.user_id)
        .where(case_comments.c.case_id == case_id)
        .order_by(case_comments.c.id)
    )
    if actor.is_vendor_lead:
        query = query.where(case_comments.c.internal.is_(False))
    scope = actor.scope
    return [
        {"id": c.id, "author": c.name, "body": c.body, "internal": bool(c.internal), "created_at": iso(c.created_at)}
        for c in conn.execute(query)
        if case_history.author_visible(c.vendor_ids, scope)
    ]


def get(conn: Connection, *, case_id: int, actor: User, scope: Scope, now: datetime, pseudonyms: Pseudonyms | None = None) -> dict[str, Any]:
    """One case with its visible events (as the review API shows them, pseudonyms included), comments and history."""
    row = _case_row(conn, case_id, scope)
    rows = event_rows(conn, case_id=case_id, scope=scope)
    worst = max((r.severity_rank for r in rows), default=0)
    item = summary(row, (len(rows), worst), scope, now)
    shown = review.names(conn, scope=scope, pseudonyms=pseudonyms)
    item["events"] = [review.public(r, names=shown) for r in rows]
    item["comments"] = _comments(conn, case_id, actor)
    item["history"] = case_history.history(conn, case_id=case_id, actor=actor, visible_ids={r.id for r in rows})
    item["people"] = _people(rows) if not actor.is_vendor_lead else []
    return item


def _people(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """The staff users of the case's events per vendor: what a customer reviewer may reveal to that vendor's lead."""
    found = {(r.vendor_id, r.vendor, r.user_name) for r in rows if r.vendor_id is not None and r.user_name}
    return [{"user": name, "vendor": vendor} for _, vendor, name in sorted(found, key=lambda f: (f[1] or "", f[2]))]


def reveal(
    conn: Connection, *, case_id: int, user_name: str, actor: User, scope: Scope, address: str | None, now: datetime
) -> list[str]:
    """Show staff user ``user_name`` by name to the leads of each vendor of the case whose events name them.

    A customer reviewer's decision, justified by this case (server/store/reveals.py audits each
    vendor's reveal); the case's history records it too. Returns the vendors' names.
    """
    _may_change(actor)
    _case_row(conn, case_id, scope)
    condition = and_(case_events.c.case_id == case_id, events.c.user_name == user_name, events.c.vendor_id.is_not(None))
    visible = visible_events(scope)
    if visible is not None:
        condition = and_(condition, visible)
    found = conn.execute(
        select(events.c.vendor_id, vendors.c.name)
        .select_from(case_events.join(events, events.c.seq == case_events.c.event_seq).join(vendors, vendors.c.id == events.c.vendor_id))
        .where(condition)
        .distinct()
        .order_by(vendors.c.name)
    ).all()
    if not found:
        raise NotFound(f"no event of this case names user {user_name!r}")
    for vendor_id, vendor in found:
        reveals.reveal(conn, vendor_id=vendor_id, user_name=user_name, case_id=case_id, actor=actor.name, address=address, now=now)
        details = {"user": user_name, "vendor": vendor, "vendor_id": vendor_id}
        audit.append(conn, actor=actor.name, action="case.reveal", target=f"case:{case_id}", details=details, address=address, now=now)
    return [vendor for _, vendor in found]
