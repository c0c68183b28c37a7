"""Event batches authenticated from the collector's memory of agents (server/liveness.py ``identify``),
on SQLite and PostgreSQL: no authentication read for an agent memory holds, and every refusal kept.

Memory is refreshed by the maintenance thread in a serving collector; here each test rereads it
right before the batches that should be answered from it. A revocation "through another
collector" is the test's own UPDATE, which this process's memory does not see until its reread.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from server.api import ingest_routes
from server.db.tables import agents, events
from server.maintenance import sweep_offline
from tests.collector_env import EnrolledAgent, event_record


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The agents ingest's transaction authenticated by reading the database."""
    real = ingest_routes._authenticate
    seen: list[str] = []

    def counted(conn: Any, collector: Any, token: str | None) -> Any:
        identity = real(conn, collector, token)
        seen.append(identity.id)
        return identity

    monkeypatch.setattr(ingest_routes, "_authenticate", counted)
    return seen


def _reread(collector: Any) -> None:
    """What the maintenance thread does every few seconds: memory's copy of revocations and ranges read again."""
    with collector.db.read() as conn:
        collector.liveness.refresh(conn)


def _post(client: Any, agent: EnrolledAgent, *records: dict[str, Any]) -> Any:
    return client.post("/api/v1/events", json={"events": list(records or [event_record()])}, headers=agent.headers)


def _stored(collector: Any, kind: str = "usb.write") -> int:
    with collector.db.read() as conn:
        return conn.execute(select(func.count()).select_from(events).where(events.c.type == kind)).scalar_one()


def _set_status(collector: Any, agent: EnrolledAgent, status: str) -> None:
    """Another collector's sweep or revocation: written to the database, unseen by this process's memory."""
    with collector.db.write() as conn:
        conn.execute(agents.update().where(agents.c.id == agent.id).values(status=status, revoked_at=collector.clock() if status == "revoked" else None))


def _status(collector: Any, agent: EnrolledAgent) -> str:
    with collector.db.read() as conn:
        return conn.execute(select(agents.c.status).where(agents.c.id == agent.id)).scalar_one()


def _remembered(client: Any, collector: Any, enroll: Any) -> EnrolledAgent:
    """An agent whose first batch (authenticated by a read) taught memory, memory then fresh."""
    agent = enroll()
    assert _post(client, agent).status_code == 200
    _reread(collector)
    return agent


def test_an_agent_memory_holds_is_not_read_again(client, collector, enroll, reads):
    agent = enroll()
    assert _post(client, agent).status_code == 200
    assert reads == [agent.id], "the first batch in this process is authenticated by a read"
    _reread(collector)
    for _ in range(3):
        assert _post(client, agent).status_code == 200
    assert reads == [agent.id], "then from memory"
    assert _stored(collector) == 4
    collector.liveness.flush()
    with collector.db.read() as conn:
        assert conn.execute(select(agents.c.last_seen_at).where(agents.c.id == agent.id)).scalar_one() == collector.clock()


def test_stale_memory_authenticates_by_a_read(client, collector, enroll, reads):
    agent = _remembered(client, collector, enroll)
    collector.liveness.stale()
    assert _post(client, agent).status_code == 200
    assert reads == [agent.id, agent.id]


def test_a_wrong_secret_or_a_forged_agent_id_is_refused_from_memory(client, collector, enroll, reads):
    agent, other = _remembered(client, collector, enroll), _remembered(client, collector, enroll)
    reads.clear()
    _reread(collector)
    wrong = EnrolledAgent(agent.id, agent.credential[:-4] + ("AAAA" if not agent.credential.endswith("AAAA") else "BBBB"), agent.vendor)
    assert _post(client, wrong).status_code == 401
    forged = _post(client, agent, event_record(), event_record(agent_id=other.id))
    assert forged.status_code == 403 and "may only submit its own events" in forged.text
    assert _stored(collector) == 2, "nothing of the forged batch is stored"
    assert reads == [], "the forged batch's agent came from memory"


def test_an_agent_revoked_through_this_collector_is_refused_at_once(client, collector, enroll, admin):
    agent = _remembered(client, collector, enroll)
    assert client.post(f"/api/v1/agents/{agent.id}/revoke", headers=admin.headers).status_code == 200
    assert _post(client, agent).status_code == 403
    assert _stored(collector) == 1


def test_an_agent_revoked_through_another_collector_is_refused_after_the_reread(client, collector, enroll):
    agent = _remembered(client, collector, enroll)
    _set_status(collector, agent, "revoked")
    _reread(collector)
    assert _post(client, agent).status_code == 403
    assert _stored(collector) == 1
    assert not collector.liveness.vouch(agent.credential), "forgotten"


def test_an_agent_memory_holds_as_offline_comes_back_at_once_with_its_event(client, collector, enroll, reads):
    agent = _remembered(client, collector, enroll)
    collector.clock.advance(seconds=collector.settings.agents.offline_after_s + 60)
    assert sweep_offline(collector) == 1
    _reread(collector)
    assert _post(client, agent).status_code == 200
    assert _status(collector, agent) == "online", "written at once, not with the next flush"
    assert _stored(collector, "agent.online") == 1
    assert _post(client, agent).status_code == 200
    assert _stored(collector, "agent.online") == 1, "back once"
    assert reads == [agent.id], "both batches from memory"


def test_an_agent_offline_in_memory_and_revoked_elsewhere_is_refused(client, collector, enroll):
    """The return's conditional flip finds the agent revoked: refused, nothing stored, no agent.online."""
    agent = _remembered(client, collector, enroll)
    collector.clock.advance(seconds=collector.settings.agents.offline_after_s + 60)
    assert sweep_offline(collector) == 1
    _reread(collector)
    _set_status(collector, agent, "revoked")
    assert collector.liveness.vouch(agent.credential), "memory still holds it (the other collector's revocation is not reread yet)"
    assert _post(client, agent).status_code == 403
    assert _stored(collector) == 1 and _stored(collector, "agent.online") == 0
    assert _status(collector, agent) == "revoked"


def test_an_agent_this_process_has_not_seen_lately_is_checked_for_a_sweep_elsewhere(client, collector, enroll, reads):
    """Memory holds it online, but another collector swept it since this process last saw it: the batch
    takes the return, so the agent is online at once with its one agent.online."""
    agent = _remembered(client, collector, enroll)
    collector.clock.advance(seconds=collector.settings.agents.offline_after_s)
    _set_status(collector, agent, "offline")
    _reread(collector)
    assert _post(client, agent).status_code == 200
    assert _status(collector, agent) == "online"
    assert _stored(collector, "agent.online") == 1
    assert reads == [agent.id]


def test_an_agent_revoked_between_the_read_and_the_write_is_refused_and_not_learned(client, collector, enroll, monkeypatch):
    """Authenticated by the read, then revoked by another collector before this batch's write: the
    touch that lets memory learn the agent is conditional, so the batch is refused (403, rolled back)."""
    agent = enroll()
    real = ingest_routes._authenticate

    def revoked_meanwhile(conn: Any, collector: Any, token: str | None) -> Any:
        identity = real(conn, collector, token)
        if identity.status == "online":
            conn.execute(agents.update().where(agents.c.id == identity.id).values(status="revoked", revoked_at=collector.clock()))
        return identity

    monkeypatch.setattr(ingest_routes, "_authenticate", revoked_meanwhile)
    assert _post(client, agent).status_code == 403
    assert _stored(collector) == 0
    assert not collector.liveness.vouch(agent.credential), "not learned"
    assert agent.credential not in collector.confirmed_agents


def test_an_agent_swept_between_the_read_and_the_write_comes_back_with_its_event(client, collector, enroll, monkeypatch):
    """Read as online, then swept offline by another collector before this batch's write: the touch
    finds it offline, and the batch brings it back through the conditional flip, with one agent.online."""
    agent = enroll()
    real = ingest_routes._authenticate

    def swept_meanwhile(conn: Any, collector: Any, token: str | None) -> Any:
        identity = real(conn, collector, token)
        if identity.status == "online":
            conn.execute(agents.update().where(agents.c.id == identity.id).values(status="offline"))
        return identity

    monkeypatch.setattr(ingest_routes, "_authenticate", swept_meanwhile)
    assert _post(client, agent).status_code == 200
    assert _status(collector, agent) == "online" and _stored(collector, "agent.online") == 1
    assert _stored(collector) == 1
