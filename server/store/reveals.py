"""Revealed staff names: a customer reviewer shows a vendor lead the real name behind a pseudonym.

A vendor lead reads their staff's events under pseudonyms (server/pseudonyms.py). When a case
needs the lead to know who it is, a customer reviewer reveals that name for that vendor, from
that case; from then on every page, export and filter of that vendor's lead shows the real name.
Each reveal is audited in the same transaction, with the case that justified it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select

from server.db.tables import reveals
from server.store import audit
from server.store.sql import insert


def reveal(conn: Connection, *, vendor_id: int, user_name: str, case_id: int, actor: str, address: str | None, now: datetime) -> None:
    """Show ``user_name`` by name to ``vendor_id``'s lead from now on; audited as ``user.reveal``.

    Revealing a name again records the newer case and reviewer (and is audited again)."""
    values = {"case_id": case_id, "revealed_by": actor, "revealed_at": now}
    stmt = insert(conn, reveals).values(vendor_id=vendor_id, user_name=user_name, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=[reveals.c.vendor_id, reveals.c.user_name], set_=values))
    audit.append(conn, actor=actor, action="user.reveal", target=user_name, details={"vendor_id": vendor_id, "case_id": case_id}, address=address, now=now)


def revealed(conn: Connection, vendor_id: int) -> set[str]:
    """The names revealed to ``vendor_id``'s lead."""
    return set(conn.execute(select(reveals.c.user_name).where(reveals.c.vendor_id == vendor_id)).scalars())
