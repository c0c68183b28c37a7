"""A case's history: the audit log's entries with target ``case:<id>``, and what of them each account may read."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from server.db.tables import audit_log, users
from server.store.scope import Scope
from server.store.sql import iso
from server.store.users import User

MAX_HISTORY = 5000


def author_visible(author_vendor_ids: Any, scope: Scope) -> bool:
    """Whether what an account of ``author_vendor_ids`` (the users column; None: unscoped) wrote is for ``scope``'s eyes.

    A vendor-scoped author (a lead, a scoped reviewer) writes about their vendors' side of a case
    that may hold other vendors' events too: only unscoped readers and readers sharing a vendor
    with the author read it (nor learn the author's account name).
    """
    if author_vendor_ids is None or scope.vendor_ids is None:
        return True
    return not scope.vendor_ids.isdisjoint(int(v) for v in author_vendor_ids)


def audit_rows(conn: Connection, *, case_id: int) -> list[Any]:
    """The audit log's entries of one case in chain order (index on target, seq), each with its actor's
    ``actor_vendor_ids`` (None for unscoped accounts and for actors that are no account)."""
    query = (
        select(audit_log, users.c.vendor_ids.label("actor_vendor_ids"))
        .outerjoin(users, users.c.name == audit_log.c.actor)
        .where(audit_log.c.target == f"case:{case_id}")
        .order_by(audit_log.c.seq)
        .limit(MAX_HISTORY)
    )
    return list(conn.execute(query))


def shown_history(rows: Sequence[Any], *, visible_ids: set[str], actor: User) -> list[tuple[Any, dict[str, Any] | None]]:
    """Each audit row with the details ``actor`` may read, or None where they would show what is out of sight.

    Out of sight: event ids of another vendor or another vendor's reveal (a scoped account),
    comments of a vendor-scoped author sharing no vendor with the reader (``author_visible``), the
    counts of another account's export (whole-case figures, a scoped account), and internal
    comments (a vendor lead). Such an entry keeps its place in the chain with its details
    withheld, so the positions stay provable.
    """
    scope = actor.scope
    shown: list[tuple[Any, dict[str, Any] | None]] = []
    for row in rows:
        details = json.loads(row.details)
        hidden = False
        if not scope.unrestricted:
            listed = details.get("events")
            if isinstance(listed, list) and any(event_id not in visible_ids for event_id in listed):
                hidden = True
            vendor_id = details.get("vendor_id")
            if isinstance(vendor_id, int) and not scope.allows(vendor_id):
                hidden = True
            if row.action == "case.comment" and not author_visible(row.actor_vendor_ids, scope):
                hidden = True
            if row.action == "case.export" and row.actor != actor.name:
                hidden = True
        if actor.is_vendor_lead and details.get("internal"):
            hidden = True
        shown.append((row, None if hidden else details))
    return shown


def history(conn: Connection, *, case_id: int, actor: User, visible_ids: set[str]) -> list[dict[str, Any]]:
    """The case's history as the API and the page show it (entries with details withheld say so)."""
    entries = []
    for row, details in shown_history(audit_rows(conn, case_id=case_id), visible_ids=visible_ids, actor=actor):
        if details is None and not actor.scope.unrestricted:
            continue  # a scoped reader's history omits what it may not read; the evidence file keeps the position
        entries.append({"seq": row.seq, "at": iso(row.at), "actor": row.actor, "action": row.action, "details": details})
    return entries


