"""Quarantined files: recorded from agents' events, released or deleted by an admin through commands.

An agent that moved a file off a stick reports it in the event (``enforcement.quarantine``);
ingest records the item for that agent only, and an id already held (by any agent) is never
overwritten. An admin's release or delete queues a command for the owning agent; heartbeat
replies carry it until that agent's ``quarantine.released`` / ``quarantine.deleted`` event names
the command, which completes it. A release command carries the file's data key, derived when
the reply is built from the collector's private quarantine key: it is never stored or logged.
A heartbeat reads its commands together with the vendor's device policy version, in one statement.
Lists take the viewer's ``Scope``: only the files of agents of the vendors it may see.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import Connection, bindparam, literal_column, null, select, union_all

from agent.events import QUARANTINE_DELETED, QUARANTINE_RELEASED
from agent.quarantine_key import data_key
from server.db.tables import agent_commands, agents, device_policies, quarantine_items, vendors
from server.errors import Conflict, NotFound
from server.store import audit
from server.store.agents import AgentIdentity
from server.store.scope import Scope
from server.store.sql import insert, iso

log = logging.getLogger(__name__)

Op = Literal["release", "delete"]
STATES = ("held", "release_requested", "released", "delete_requested", "deleted", "failed")
REQUESTABLE = ("held", "failed")
"""States an admin may ask a release or delete from; a pending command or a finished one says no."""
_REQUESTED: dict[str, str] = {"release": "release_requested", "delete": "delete_requested"}
_DONE: dict[str, str] = {"release": "released", "delete": "deleted"}
_REPORTS: dict[str, str] = {QUARANTINE_RELEASED: "release", QUARANTINE_DELETED: "delete"}
MAX_DETAIL = 1000
MAX_LIST = 1000
MAX_COMMANDS = 100
"""Commands in one heartbeat reply."""
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _held_item(quarantine: Any) -> dict[str, Any] | None:
    """The ``enforcement.quarantine`` object of an event if it is well formed, else None."""
    if not isinstance(quarantine, dict):
        return None
    qid, key, path, size, sha256 = (quarantine.get(name) for name in ("id", "ephemeral_key", "original_path", "size", "sha256"))
    if not (isinstance(qid, str) and _UUID.match(qid.lower()) and isinstance(key, str) and _HEX64.match(key)):
        return None
    if not (isinstance(path, str) and 0 < len(path) <= 4096 and "\x00" not in path and isinstance(sha256, str) and _HEX64.match(sha256)):
        return None
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 2**63:
        return None
    return {"quarantine_id": qid.lower(), "ephemeral_key": key, "original_path": path, "size": size, "sha256": sha256}


def _detail(value: Any) -> str | None:
    return None if value is None else str(value).replace("\x00", "")[:MAX_DETAIL]


def on_ingest(conn: Connection, *, agent: AgentIdentity, records: Sequence[dict[str, Any]], now: datetime) -> None:
    """Ingest's hook for newly stored events that carry an ``enforcement`` object: a file quarantined
    is recorded, a report on a command completes that command (only the owning agent's)."""
    for record in records:
        enforcement = record.get("enforcement")
        if not isinstance(enforcement, dict):
            continue
        action = enforcement.get("action")
        if action == "quarantine" and enforcement.get("done") is True:
            _record(conn, agent, record, enforcement.get("quarantine"), now)
        elif _REPORTS.get(record.get("type") or "") == action:
            _complete(conn, agent, record, enforcement, now)


def _record(conn: Connection, agent: AgentIdentity, record: dict[str, Any], quarantine: Any, now: datetime) -> None:
    item = _held_item(quarantine)
    if item is None:
        log.warning("agent %s reported a quarantine without a well-formed quarantine object (event %s); not recorded", agent.id, record["id"])
        return
    values = {**item, "agent_id": agent.id, "vendor": agent.vendor_id, "event_id": record["id"], "state": "held", "created_at": now, "updated_at": now}
    stored = conn.execute(insert(conn, quarantine_items).values(**values).on_conflict_do_nothing(index_elements=["quarantine_id"]))
    if stored.rowcount == 0:
        log.warning("agent %s reported quarantine id %s, which is already recorded; ignored", agent.id, item["quarantine_id"])


def _complete(conn: Connection, agent: AgentIdentity, record: dict[str, Any], enforcement: dict[str, Any], now: datetime) -> None:
    command_id, quarantine = enforcement.get("command"), enforcement.get("quarantine")
    qid = quarantine.get("id") if isinstance(quarantine, dict) else None
    if not isinstance(command_id, int) or isinstance(command_id, bool) or not isinstance(qid, str) or not 0 < command_id < 2**31:
        return
    op = enforcement["action"]
    finished = conn.execute(
        agent_commands.update()
        .where(
            agent_commands.c.id == command_id,
            agent_commands.c.agent_id == agent.id,
            agent_commands.c.quarantine_id == qid.lower(),
            agent_commands.c.op == op,
            agent_commands.c.done_at.is_(None),
        )
        .values(done_at=now)
    )
    if finished.rowcount == 0:
        return  # not this agent's, not pending, or not what was asked: the report changes nothing
    if enforcement.get("done") is True:
        state, detail = _DONE[op], _detail(record.get("path"))
    else:
        state, detail = "failed", _detail(enforcement.get("detail")) or f"the agent could not {op} the file"
    conn.execute(
        quarantine_items.update()
        .where(quarantine_items.c.quarantine_id == qid.lower(), quarantine_items.c.agent_id == agent.id)
        .values(state=state, detail=detail, updated_at=now)
    )


def _public(row: Any) -> dict[str, Any]:
    return {
        "quarantine_id": row.quarantine_id,
        "agent_id": row.agent_id,
        "hostname": row.hostname,
        "vendor": row.vendor_name,
        "event_id": row.event_id,
        "original_path": row.original_path,
        "size": row.size,
        "sha256": row.sha256,
        "state": row.state,
        "detail": row.detail,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def _items() -> Any:
    return (
        select(quarantine_items, agents.c.hostname, agents.c.status.label("agent_status"), vendors.c.name.label("vendor_name"))
        .join(agents, agents.c.id == quarantine_items.c.agent_id)
        .join(vendors, vendors.c.id == quarantine_items.c.vendor)
    )


def list_items(
    conn: Connection,
    *,
    scope: Scope,
    vendor: str | None = None,
    agent_id: str | None = None,
    state: str | None = None,
    limit: int = MAX_LIST,
) -> list[dict[str, Any]]:
    """Quarantined files of the vendors ``scope`` may see, newest first."""
    query = _items().order_by(quarantine_items.c.id.desc()).limit(min(limit, MAX_LIST))
    visible = scope.where(quarantine_items.c.vendor)
    if visible is not None:
        query = query.where(visible)
    if vendor:
        query = query.where(vendors.c.name == vendor)
    if agent_id:
        query = query.where(quarantine_items.c.agent_id == agent_id)
    if state:
        query = query.where(quarantine_items.c.state == state)
    return [_public(row) for row in conn.execute(query)]


def request(conn: Connection, *, quarantine_id: str, op: Op, actor: str, address: str | None, now: datetime) -> dict[str, Any]:
    """Ask the owning agent to release or delete its copy (audited ``quarantine.release`` /
    ``quarantine.delete``): queues the command its heartbeats will carry."""
    qid = quarantine_id.lower()
    item = conn.execute(_items().where(quarantine_items.c.quarantine_id == qid)).first()
    if item is None:
        raise NotFound(f"no quarantined file {quarantine_id!r}")
    if item.agent_status == "revoked":
        raise Conflict(f"the agent holding {qid} ({item.hostname}) is revoked and takes no commands")
    moved = conn.execute(
        quarantine_items.update()
        .where(quarantine_items.c.quarantine_id == qid, quarantine_items.c.state.in_(REQUESTABLE))
        .values(state=_REQUESTED[op], detail=None, updated_at=now)
    )
    if moved.rowcount == 0:
        raise Conflict(f"{qid} is {item.state.replace('_', ' ')}; only a held or failed file can be released or deleted")
    command_id = conn.execute(
        agent_commands.insert().values(agent_id=item.agent_id, op=op, quarantine_id=qid, created_at=now).returning(agent_commands.c.id)
    ).scalar_one()
    details = {"command": command_id, "agent_id": item.agent_id, "original_path": item.original_path, "sha256": item.sha256}
    audit.append(conn, actor=actor, action=f"quarantine.{op}", target=qid, details=details, address=address, now=now)
    return {"command": command_id, "op": op, "quarantine_id": qid, "agent_id": item.agent_id, "state": _REQUESTED[op]}


# Built once, as every heartbeat runs it: the vendor's device policy version (kind 0) and the
# agent's pending commands (kind 1) in one round trip to the database.
_COMMANDS = (
    select(literal_column("1").label("kind"), agent_commands.c.id, agent_commands.c.op, agent_commands.c.quarantine_id, quarantine_items.c.ephemeral_key)
    .join(quarantine_items, quarantine_items.c.quarantine_id == agent_commands.c.quarantine_id)
    .where(agent_commands.c.agent_id == bindparam("agent_id"), agent_commands.c.done_at.is_(None))
    .order_by(agent_commands.c.id)
    .limit(MAX_COMMANDS)
    .subquery()
)
_HEARTBEAT = union_all(
    select(
        literal_column("0").label("kind"),
        device_policies.c.version.label("id"),
        null().label("op"),
        null().label("quarantine_id"),
        null().label("ephemeral_key"),
    ).where(device_policies.c.vendor == bindparam("vendor_id")),
    select(_COMMANDS),
)


def heartbeat_reply(
    conn: Connection, *, agent_id: str, vendor_id: int, private_key: Callable[[], X25519PrivateKey], now: datetime
) -> tuple[int | None, list[dict[str, Any]]]:
    """What a heartbeat reply adds for device control: the vendor's device policy version (None:
    no policy) and the agent's commands not yet reported done, oldest first (``MAX_COMMANDS`` at
    most; the rest follow as those complete). ``private_key`` is asked for only when a release is
    among them."""
    found = conn.execute(_HEARTBEAT, {"agent_id": agent_id, "vendor_id": vendor_id}).all()
    version = next((row.id for row in found if row.kind == 0), None)
    rows = sorted((row for row in found if row.kind == 1), key=lambda row: row.id)
    commands: list[dict[str, Any]] = []
    key = private_key() if any(row.op == "release" for row in rows) else None
    for row in rows:
        command = {"id": row.id, "op": row.op, "quarantine_id": row.quarantine_id}
        if key is not None and row.op == "release":
            try:
                command["key"] = data_key(key, row.ephemeral_key, row.quarantine_id).hex()
            except ValueError:  # a low-order point: no agent's real key; never retried in every heartbeat
                _give_up(conn, row.id, row.quarantine_id, "the agent's ephemeral key gives no shared secret: this file cannot be released, only deleted", now=now)
                continue
        commands.append(command)
    return version, commands


def reply_state(conn: Connection) -> tuple[dict[int, int], set[str]]:
    """What heartbeat replies of agents without commands need, for all agents at once (collectors keep
    it in memory, server/liveness.py): each vendor's device policy version, and the agents that have
    commands not yet reported done (their heartbeats read them with ``heartbeat_reply``)."""
    versions = {row.vendor: row.version for row in conn.execute(select(device_policies.c.vendor, device_policies.c.version))}
    pending = set(conn.execute(select(agent_commands.c.agent_id).where(agent_commands.c.done_at.is_(None)).distinct()).scalars())
    return versions, pending


def _give_up(conn: Connection, command_id: int, quarantine_id: str, detail: str, *, now: datetime) -> None:
    conn.execute(agent_commands.update().where(agent_commands.c.id == command_id).values(done_at=now))
    conn.execute(quarantine_items.update().where(quarantine_items.c.quarantine_id == quarantine_id).values(state="failed", detail=detail, updated_at=now))
