"""The agent API: enrollment and heartbeats, and what every authenticated agent call records
(``record_agent_call``). Event ingest is server/api/ingest_routes.py. Heartbeats that change
nothing but liveness, an agent's return from offline included, are answered from memory and
written in batches (server/liveness.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection

from agent.events import AGENT_ONLINE, AGENT_UNEXPECTED_IP
from server.api.deps import AddressDep, CollectorDep, TokenDep
from server.api.schemas import EnrollIn, EnrollOut, HeartbeatOut
from server.api.signature_schemas import HeartbeatWithIndexesIn
from server.collector import Collector
from server.errors import Forbidden
from server.keys import quarantine_key
from server.liveness import RETURN_DETAILS, report_state
from server.netaddr import in_networks, parse_networks
from server.store import addresses, agents, enrollment, quarantine
from server.store import ingest as event_ingest
from server.store.agents import AgentIdentity
from server.store.sql import iso

router = APIRouter(prefix="/api/v1", tags=["agent"])


@router.post("/enroll", response_model=EnrollOut, summary="Enroll an agent with a vendor's enrollment token")
def enroll(body: EnrollIn, collector: CollectorDep, address: AddressDep) -> EnrollOut:
    now = collector.clock()
    with collector.db.write() as conn:
        enrolled = enrollment.enroll(
            conn,
            token=body.token,
            hostname=body.hostname,
            os_name=body.os,
            machine_id=body.machine_id,
            agent_version=body.agent_version,
            address=address,
            now=now,
        )
        identity = agents.authenticate(conn, value=enrolled.credential)
        # Refused by the token's vendor's list too; raising rolls the new agent back.
        collector.denied.check(conn, kind="enroll", address=address, vendor_ids=(identity.vendor_id,))
        record_agent_call(conn, collector, identity, address)
    return EnrollOut(
        agent_id=enrolled.agent_id,
        credential=enrolled.credential,
        vendor=enrolled.vendor,
        heartbeat_interval_s=collector.settings.agents.heartbeat_interval_s,
        signing_public_key=collector.signing_public_key,
    )


@router.post("/heartbeat", response_model=HeartbeatOut, summary="Report agent health; the reply names the device policy version and pending commands")
async def heartbeat(body: HeartbeatWithIndexesIn, collector: CollectorDep, token: TokenDep, address: AddressDep) -> Response:
    # A coroutine, so a heartbeat answered from memory (server/liveness.py) costs no hop to the
    # thread pool and no database; any other takes the synchronous path on a worker thread.
    now = collector.clock()
    report = body.model_dump()
    state = report_state(report)
    memory = collector.liveness
    answered = None if collector.denied.due() else memory.answer(token, address, state, now)
    if answered is None:
        agent_id, policy_version, commands = await run_in_threadpool(_heartbeat, collector, token, address, report, state, now)
    else:
        identity, policy_version = answered
        collector.denied.check(None, kind="agent", address=address, vendor_ids=(identity.vendor_id,))
        memory.heartbeat(identity, address=address, report=report, now=now)
        agent_id, commands = identity.id, []
    collector.metrics.heartbeats.inc()
    reply = HeartbeatOut(
        server_time=iso(now) or "",
        heartbeat_interval_s=collector.settings.agents.heartbeat_interval_s,
        status="online",
        device_policy_version=policy_version,
        commands=commands,
        ship_after_s=collector.pacer.ship_after(agent_id, body.spool_depth),
    )
    # Serialized here: the model is the declared response_model, so FastAPI's own validation pass would only repeat it.
    return Response(reply.model_dump_json(), media_type="application/json")


def _heartbeat(
    collector: Collector, token: str | None, address: str | None, report: dict[str, Any], state: tuple[Any, ...], now: datetime
) -> tuple[str, int | None, list[dict[str, Any]]]:
    """The synchronous path: authenticate, record the call and the report, read the reply, in one
    transaction. Returns the agent's id, its vendor's device policy version and its commands."""
    memory = collector.liveness
    memory.refresh_if_due()
    with collector.db.write() as conn:
        identity = agents.authenticate(conn, value=token)
        record_agent_call(conn, collector, identity, address, touch=False)
        if not agents.heartbeat(conn, agent_id=identity.id, report=report, address=address, now=now) and _bring_back(conn, collector, identity, address):
            agents.heartbeat(conn, agent_id=identity.id, report=report, address=address, now=now)
        policy_version, commands = quarantine.heartbeat_reply(
            conn, agent_id=identity.id, vendor_id=identity.vendor_id, private_key=lambda: quarantine_key(collector.settings.data_dir), now=now
        )
        memory.learn(conn, identity=identity, token=token or "", state=state, now=now, commands=bool(commands))
    return identity.id, policy_version, commands


def record_agent_call(conn: Connection, collector: Collector, identity: AgentIdentity, address: str | None, *, touch: bool = True) -> None:
    """Every authenticated agent call: seen now (``touch=False`` when the caller's own UPDATE
    of the agent row says so), from this address, which may be out of range. An address in a
    denied network (collector-wide, or the agent's vendor's) is refused first: DeniedNetwork, which
    rolls the call's transaction back and is recorded by the app's handler (server/api/access_routes.py).

    What only adds to liveness is buffered and written with the next flush (server/liveness.py):
    an online agent's last-seen time, and a call from an address already recorded under the
    vendor's current ranges. Coming back online and a new address are written at once; coming back
    raises ``agent.online`` only where this call's conditional flip took (``agents.bring_back``), so
    an agent several collectors hear again at once comes back once."""
    collector.denied.check(conn, kind="agent", address=address, vendor_ids=(identity.vendor_id,))
    now = collector.clock()
    memory = collector.liveness
    if identity.status == "offline":
        _bring_back(conn, collector, identity, address)
        if touch:
            agents.touch(conn, agent_id=identity.id, address=address, now=now)
    elif touch and not memory.call(conn, identity.id, address=address, now=now) and not agents.touch(conn, agent_id=identity.id, address=address, now=now):
        # Read as online, swept offline by another collector since: back through the conditional flip.
        if _bring_back(conn, collector, identity, address):
            agents.touch(conn, agent_id=identity.id, address=address, now=now)
    if not address or memory.counts_address(conn, identity.id, address, identity.allowed_cidrs, now):
        return
    expected = in_networks(address, parse_networks(identity.allowed_cidrs)) if identity.allowed_cidrs else None
    sighting = addresses.record_agent(conn, agent_id=identity.id, address=address, country=collector.country(address), expected=expected, now=now)
    memory.address_recorded(conn, identity.id, address, identity.allowed_cidrs)
    if sighting.first_time and expected is False:
        details = {"address": address, "country": sighting.country, "allowed_cidrs": list(identity.allowed_cidrs)}
        _raise(conn, collector, identity, AGENT_UNEXPECTED_IP, details, "high", address)


def _bring_back(conn: Connection, collector: Collector, identity: AgentIdentity, address: str | None) -> bool:
    """Flip an offline agent online (``agents.bring_back``, conditional) and raise its one
    ``agent.online`` when this call's flip took; True when the agent is online now either way.

    Raises:
        Forbidden: the agent was revoked (or removed) since it authenticated, in another
            collector's transaction: the call is refused as ``authenticate`` would refuse it now,
            its transaction rolled back, and memory does not learn it.
    """
    if agents.bring_back(conn, agent_ids=[identity.id]):
        _raise(conn, collector, identity, AGENT_ONLINE, dict(RETURN_DETAILS), None, address)
        return True
    if agents.status(conn, agent_id=identity.id) != "online":
        raise Forbidden("this agent has been revoked; enroll it again")
    return True


def _raise(conn: Connection, collector: Collector, identity: AgentIdentity, kind: str, details: dict[str, Any], severity: str | None, address: str | None) -> None:
    event_ingest.raise_agent_event(
        conn,
        agent=identity,
        kind=kind,
        details=details,
        now=collector.clock(),
        severity=severity,
        address=address,
        country=collector.country(address),
        alert_targets=collector.alert_targets,
        alert_min_rank=collector.alert_min_rank,
    )
    if severity and collector.alert_targets:
        collector.alerts_pending.set()
