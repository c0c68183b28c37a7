"""Enrolled agents: authentication, heartbeats, liveness, revocation.

Lists and details take the viewer's ``Scope`` (server/store/scope.py): an agent of a vendor out of
scope is neither listed nor found (404), so a scoped reviewer cannot learn it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, CursorResult, and_, bindparam, select

from server import credentials
from server.db.tables import agent_addresses, agents, vendors
from server.errors import Forbidden, NotFound, Unauthorized
from server.store import addresses
from server.store.scope import Scope
from server.store.sql import iso

REVOKED_NOTE = "dlp.revoked"
"""Key in a connection's ``info`` naming the agents its transaction revokes: each process's memory
of agents (server/liveness.py) forgets them when it commits."""


@dataclass(frozen=True)
class AgentIdentity:
    id: str
    vendor_id: int
    vendor: str
    hostname: str
    allowed_cidrs: tuple[str, ...]
    status: str


def authenticate(conn: Connection, *, value: str | None) -> AgentIdentity:
    """The agent whose credential ``value`` is; revoked agents are refused with 403."""
    token = credentials.parse_token(value, credentials.AGENT_KIND)
    if token is None:
        raise Unauthorized("missing or malformed agent credential")
    row = conn.execute(
        select(agents.c.id, agents.c.secret_hash, agents.c.status, agents.c.vendor_id, agents.c.hostname, vendors.c.name, vendors.c.allowed_cidrs)
        .join(vendors, vendors.c.id == agents.c.vendor_id)
        .where(agents.c.id == token.id)
    ).first()
    if row is None or not credentials.secret_matches(token.secret, row.secret_hash):
        raise Unauthorized("invalid agent credential")
    if row.status == "revoked":
        raise Forbidden("this agent has been revoked; enroll it again")
    return AgentIdentity(row.id, row.vendor_id, row.name, row.hostname, tuple(row.allowed_cidrs or ()), row.status)


def touch(conn: Connection, *, agent_id: str, address: str | None, now: datetime) -> bool:
    """Mark an online agent seen now. Conditional on ``status = 'online'``, like the sweep and
    ``bring_back``: False when the row took nothing (offline, revoked or gone), and the caller
    brings an offline agent back with ``bring_back`` (its one ``agent.online``) and touches again.
    Setting ``online`` unconditionally raced another collector's sweep on PostgreSQL: an agent
    went offline, with its event, and came back without one."""
    result = conn.execute(agents.update().where(agents.c.id == agent_id, agents.c.status == "online").values(last_seen_at=now, last_ip=address))
    return result.rowcount > 0


def heartbeat(conn: Connection, *, agent_id: str, report: dict[str, Any], address: str | None, now: datetime) -> bool:
    """Record a health report; it also marks the agent seen (one UPDATE instead of two). Like
    ``touch``, only while the agent is online: False when the row took nothing."""
    result = conn.execute(
        agents.update()
        .where(agents.c.id == agent_id, agents.c.status == "online")
        .values(
            last_seen_at=now,
            last_ip=address,
            agent_version=report["agent_version"],
            ruleset_version=report.get("ruleset_version"),
            bundle_version=report.get("bundle_version"),
            fingerprints=report.get("fingerprints"),
            ruleset_error=report.get("ruleset_error"),
            spool_depth=report["spool_depth"],
            dropped=report["dropped"],
            sources=report.get("sources") or {},
            last_heartbeat_at=now,
        )
    )
    return result.rowcount > 0


def status(conn: Connection, *, agent_id: str) -> str | None:
    """The agent's status as stored now (None: no such agent)."""
    return conn.execute(select(agents.c.status).where(agents.c.id == agent_id)).scalar()


_seen = bindparam("b_seen", type_=agents.c.last_seen_at.type)
_online_row = (agents.c.id == bindparam("b_id"), agents.c.status == "online", agents.c.last_seen_at <= _seen)
_REPORT_COLUMNS = ("agent_version", "ruleset_version", "bundle_version", "fingerprints", "ruleset_error", "spool_depth", "dropped", "sources")
_SEEN = agents.update().where(*_online_row).values(last_seen_at=_seen, last_ip=bindparam("b_ip"))
_SEEN_WITH_REPORT = (
    agents.update()
    .where(*_online_row)
    .values(
        last_seen_at=_seen,
        last_ip=bindparam("b_ip"),
        last_heartbeat_at=_seen,
        **{name: bindparam(f"b_{name}", type_=agents.c[name].type) for name in _REPORT_COLUMNS},
    )
)


def write_liveness(conn: Connection, *, seen: list[tuple[str, datetime, str | None, dict[str, Any] | None]]) -> dict[str, str]:
    """Liveness buffered in memory (server/liveness.py), in two statements: each (agent, seen at,
    from address, heartbeat report or None for another call). A row takes it only while the agent
    is online and not seen later: it never brings an agent back from offline (``bring_back`` does,
    once) nor undoes a revocation, and another collector's later write wins. Returns the agents
    whose row took none, with the status their row has (``"gone"``: no row)."""
    beats, calls = [], []
    for agent_id, at, address, report in seen:
        values = {"b_id": agent_id, "b_seen": at, "b_ip": address}
        if report is None:
            calls.append(values)
        else:
            beats.append(values | {f"b_{name}": report.get(name) for name in _REPORT_COLUMNS})
    written = (conn.execute(_SEEN_WITH_REPORT, beats).rowcount if beats else 0) + (conn.execute(_SEEN, calls).rowcount if calls else 0)
    if written == len(seen):
        return {}
    wanted = {agent_id: at for agent_id, at, _, _ in seen}
    stored = {row.id: row for row in conn.execute(select(agents.c.id, agents.c.status, agents.c.last_seen_at).where(agents.c.id.in_(list(wanted))))}
    lost = {agent_id: "gone" for agent_id in wanted.keys() - stored.keys()}
    lost.update({row.id: row.status for row in stored.values() if row.status != "online" or row.last_seen_at != wanted[row.id]})
    return lost


BRING_BACK_CHUNK = 500
"""Agents per statement: well under SQLite's limit on bound parameters."""


def bring_back(conn: Connection, *, agent_ids: list[str]) -> list[str]:
    """Offline agents that called again are online; returns those this statement flipped. The
    flip is conditional (``status = 'offline'``), so of several collectors (or requests) bringing
    one agent back at once exactly one sees it flip and raises its ``agent.online``; a revoked
    agent stays revoked. Its last-seen time is the caller's to write."""
    flipped: list[str] = []
    for start in range(0, len(agent_ids), BRING_BACK_CHUNK):
        chunk = agent_ids[start : start + BRING_BACK_CHUNK]
        rows = conn.execute(agents.update().where(agents.c.id.in_(chunk), agents.c.status == "offline").values(status="online").returning(agents.c.id))
        flipped.extend(rows.scalars())
    return flipped


def undo_return(conn: Connection, *, agent_id: str) -> None:
    """Put back offline an agent this transaction flipped online (``bring_back``) whose
    ``agent.online`` could not be stored: its next call is a return again and raises the event
    then, rather than leaving an agent online with no event saying it came back."""
    conn.execute(agents.update().where(agents.c.id == agent_id, agents.c.status == "online").values(status="offline"))


def mark_offline(conn: Connection, *, silent_since: datetime) -> list[dict[str, Any]]:
    """Flip agents silent since ``silent_since`` to offline and return them.

    One conditional UPDATE does it, so when several collectors run this sweep each agent
    goes offline (and raises its event) exactly once.
    """
    rows = conn.execute(
        agents.update()
        .where(agents.c.status == "online", agents.c.last_seen_at < silent_since)
        .values(status="offline")
        .returning(agents.c.id, agents.c.vendor_id, agents.c.hostname, agents.c.last_seen_at)
    ).all()
    return [{"id": r.id, "vendor_id": r.vendor_id, "hostname": r.hostname, "last_seen_at": r.last_seen_at} for r in rows]


def revoke(conn: Connection, *, agent_id: str, now: datetime) -> None:
    result = conn.execute(agents.update().where(agents.c.id == agent_id).values(status="revoked", revoked_at=now))
    if result.rowcount == 0:
        raise NotFound(f"no agent {agent_id!r}")
    conn.info.setdefault(REVOKED_NOTE, set()).add(agent_id)


def revoked_since(conn: Connection, *, since: datetime) -> list[str]:
    """Agents revoked at or after ``since``."""
    return list(conn.execute(select(agents.c.id).where(agents.c.status == "revoked", agents.c.revoked_at >= since)).scalars())


def known_agents(conn: Connection) -> CursorResult[Any]:
    """Every agent not revoked (online and offline) with what answering its heartbeats from memory
    needs (server/liveness.py): its identity and status, when it was last seen, its stored report,
    and the record of its last address."""
    return conn.execute(
        select(
            agents.c.id, agents.c.secret_hash, agents.c.status, agents.c.vendor_id, agents.c.hostname, vendors.c.name, vendors.c.allowed_cidrs,
            agents.c.last_seen_at, agents.c.agent_version, agents.c.ruleset_version, agents.c.bundle_version, agents.c.ruleset_error,
            agents.c.fingerprints, agents.c.sources, agent_addresses.c.address, agent_addresses.c.expected,
        )  # fmt: skip
        .join(vendors, vendors.c.id == agents.c.vendor_id)
        .outerjoin(agent_addresses, and_(agent_addresses.c.agent_id == agents.c.id, agent_addresses.c.address == agents.c.last_ip))
        .where(agents.c.status.in_(("online", "offline")))
    )


def office_ranges(conn: Connection) -> dict[int, tuple[str, ...]]:
    """Each vendor's office ranges (empty: none configured), against which agents' addresses are judged."""
    return {row.id: tuple(row.allowed_cidrs or ()) for row in conn.execute(select(vendors.c.id, vendors.c.allowed_cidrs))}


def list_agents(
    conn: Connection, *, scope: Scope, vendor: str | None = None, status: str | None = None, agent_id: str | None = None
) -> list[dict[str, Any]]:
    """The agents ``scope`` may see, by vendor and host name, with their address history."""
    query = select(agents, vendors.c.name.label("vendor")).join(vendors, vendors.c.id == agents.c.vendor_id).order_by(vendors.c.name, agents.c.hostname)
    visible = scope.where(agents.c.vendor_id)
    if visible is not None:
        query = query.where(visible)
    if vendor:
        query = query.where(vendors.c.name == vendor)
    if status:
        query = query.where(agents.c.status == status)
    if agent_id:
        query = query.where(agents.c.id == agent_id)
    rows = conn.execute(query).all()
    history = addresses.agent_history(conn, agent_ids=[r.id for r in rows], scope=scope)
    return [_public(row, history[row.id]) for row in rows]


def get(conn: Connection, *, agent_id: str, scope: Scope) -> dict[str, Any]:
    """One agent; NotFound as well when it belongs to a vendor out of ``scope``."""
    found = list_agents(conn, agent_id=agent_id, scope=scope)
    if not found:
        raise NotFound(f"no agent {agent_id!r}")
    return found[0]


def _public(row: Any, history: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": row.id,
        "hostname": row.hostname,
        "vendor": row.vendor,
        "os": row.os,
        "status": row.status,
        "enrolled_at": iso(row.enrolled_at),
        "last_seen_at": iso(row.last_seen_at),
        "last_heartbeat_at": iso(row.last_heartbeat_at),
        "agent_version": row.agent_version,
        "ruleset_version": row.ruleset_version,
        "bundle_version": row.bundle_version,
        "fingerprints": row.fingerprints,
        "ruleset_error": row.ruleset_error,
        "spool_depth": row.spool_depth,
        "dropped": row.dropped,
        "sources": row.sources or {},
        "last_ip": row.last_ip,
        "unexpected_ip": any(entry["expected"] is False for entry in history),
        "ip_addresses": history,
    }
