"""IP-address records: where each agent and each reviewer called from, and their retention.

Addresses are personal data, so each record keeps only first and last sight and a count,
and ``purge`` erases everything older than the retention period: the per-agent and per-user
records, the address stored with each event, failed-login records and audit-log addresses.
An agent's records are read within the viewer's ``Scope`` (those of its vendor); a user's own
records are shown only to that user (and to admins).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, select

from server.db.tables import (
    agent_addresses,
    agents,
    audit_log,
    events,
    login_attempts,
    user_addresses,
)
from server.store.scope import Scope
from server.store.sql import insert, iso


@dataclass(frozen=True)
class Sighting:
    address: str
    country: str | None
    expected: bool | None
    """None when the vendor has no office ranges configured."""
    first_time: bool


def record_agent(conn: Connection, *, agent_id: str, address: str, country: str | None, expected: bool | None, now: datetime) -> Sighting:
    stmt = insert(conn, agent_addresses).values(
        agent_id=agent_id, address=address, country=country, expected=expected, first_seen_at=now, last_seen_at=now, count=1
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[agent_addresses.c.agent_id, agent_addresses.c.address],
        set_={"last_seen_at": now, "count": agent_addresses.c.count + 1, "expected": expected, "country": func.coalesce(agent_addresses.c.country, country)},
    ).returning(agent_addresses.c.count)
    count = conn.execute(stmt).scalar_one()
    return Sighting(address, country, expected, count == 1)


_call_seen = bindparam("b_seen", type_=agent_addresses.c.last_seen_at.type)
_COUNT_CALLS = (
    agent_addresses.update()
    .where(agent_addresses.c.agent_id == bindparam("b_agent"), agent_addresses.c.address == bindparam("b_address"))
    .values(
        count=agent_addresses.c.count + bindparam("b_count", type_=agent_addresses.c.count.type),
        last_seen_at=case((agent_addresses.c.last_seen_at < _call_seen, _call_seen), else_=agent_addresses.c.last_seen_at),
    )
)


def count_agent_calls(conn: Connection, *, calls: list[tuple[str, str, int, datetime]]) -> None:
    """Calls counted in memory (server/liveness.py) on records ``record_agent`` made: each (agent,
    address, calls, last of them). A record erased meanwhile (retention) stays erased."""
    if calls:
        conn.execute(_COUNT_CALLS, [{"b_agent": agent, "b_address": address, "b_count": count, "b_seen": seen} for agent, address, count, seen in calls])


def record_user(conn: Connection, *, user_id: int, address: str, country: str | None, now: datetime) -> None:
    stmt = insert(conn, user_addresses).values(user_id=user_id, address=address, country=country, first_seen_at=now, last_seen_at=now, count=1)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[user_addresses.c.user_id, user_addresses.c.address],
            set_={"last_seen_at": now, "count": user_addresses.c.count + 1},
        )
    )


def agent_history(conn: Connection, *, agent_ids: list[str], scope: Scope) -> dict[str, list[dict[str, Any]]]:
    """Each agent's addresses, most recent first; agents of vendors out of ``scope`` have none."""
    history: dict[str, list[dict[str, Any]]] = {agent_id: [] for agent_id in agent_ids}
    if not agent_ids:
        return history
    query = select(agent_addresses).where(agent_addresses.c.agent_id.in_(agent_ids)).order_by(agent_addresses.c.last_seen_at.desc())
    visible = scope.where(agents.c.vendor_id)
    if visible is not None:
        query = query.join(agents, agents.c.id == agent_addresses.c.agent_id).where(visible)
    rows = conn.execute(query)
    for row in rows:
        history[row.agent_id].append(
            {
                "address": row.address,
                "country": row.country,
                "expected": row.expected,
                "first_seen_at": iso(row.first_seen_at),
                "last_seen_at": iso(row.last_seen_at),
                "count": row.count,
            }
        )
    return history


def user_history(conn: Connection, *, user_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(select(user_addresses).where(user_addresses.c.user_id == user_id).order_by(user_addresses.c.last_seen_at.desc()))
    return [
        {"address": r.address, "country": r.country, "first_seen_at": iso(r.first_seen_at), "last_seen_at": iso(r.last_seen_at), "count": r.count}
        for r in rows
    ]


def purge(conn: Connection, *, older_than: datetime) -> dict[str, int]:
    """Erase addresses last seen before ``older_than``; returns how many records each kind lost."""
    counts = {
        "agent_addresses": conn.execute(agent_addresses.delete().where(agent_addresses.c.last_seen_at < older_than)).rowcount,
        "user_addresses": conn.execute(user_addresses.delete().where(user_addresses.c.last_seen_at < older_than)).rowcount,
        "login_attempts": conn.execute(login_attempts.delete().where(login_attempts.c.at < older_than)).rowcount,
        "events": conn.execute(
            events.update().where(events.c.received_at < older_than, events.c.source_ip.is_not(None)).values(source_ip=None, source_country=None)
        ).rowcount,
        "agents": conn.execute(agents.update().where(agents.c.last_seen_at < older_than, agents.c.last_ip.is_not(None)).values(last_ip=None)).rowcount,
        "audit_log": conn.execute(audit_log.update().where(audit_log.c.at < older_than, audit_log.c.address.is_not(None)).values(address=None)).rowcount,
    }
    return counts
