"""Liveness in memory (server/liveness.py): two collectors over one database, on SQLite and PostgreSQL.

Each test drives two ``Collector`` objects (two apps, as two ``dlp-server serve`` processes behind
a load balancer would be) over one database and one clock, and sends each request to the one
it names.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from server.db.tables import agent_addresses, agents, events
from server.liveness import REFRESH_S
from server.maintenance import keep_liveness, sweep_offline
from tests.collector_env import FakeClock, Person, add_user, enrollment_token, event_record, write_settings
from tests.waiting import wait_for

REPORT = {"agent_version": "0.3.0", "ruleset_version": "r1", "spool_depth": 0, "dropped": 0, "sources": {"files": {"state": "ok", "message": "0 item(s)"}}}
OFFICE = {"X-Forwarded-For": "198.51.100.7"}


@dataclass
class Node:
    """One collector and a client talking to it alone."""

    collector: Any
    client: Any

    def beat(self, agent: dict[str, str], report: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Any:
        return self.client.post("/api/v1/heartbeat", json=report or REPORT, headers={**agent, **(headers or {})})


@pytest.fixture
def nodes(database_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[list[Node]]:
    from fastapi.testclient import TestClient

    from server.api.app import create_app
    from server.collector import Collector
    from server.keys import create_signing_key
    from server.settings import load_settings

    data_dir = tmp_path / "data"
    write_settings(data_dir, '[network]\ntrusted_proxies = ["127.0.0.0/8"]\n')
    create_signing_key(data_dir / "signing.key")
    settings = load_settings(data_dir, environ={"DLP_DATABASE_URL": database_url})
    collectors = [Collector(settings, clock=clock) for _ in range(2)]
    clients = [TestClient(create_app(c), client=("127.0.0.1", 50000)) for c in collectors]
    for client in clients:
        client.__enter__()
    yield [Node(c, client) for c, client in zip(collectors, clients, strict=True)]
    for client in clients:
        client.__exit__(None, None, None)
    for collector in collectors:
        collector.close()


@pytest.fixture
def admin_of(nodes: list[Node]) -> Person:
    return add_user(nodes[0].collector, "alice", "admin")


def _enroll(node: Node, hostname: str = "ws-1") -> dict[str, str]:
    token = enrollment_token(node.collector)
    answer = node.client.post("/api/v1/enroll", json={"token": token, "hostname": hostname, "os": "linux", "agent_version": "0.1.0"}, headers=OFFICE)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['credential']}"}


def _row(node: Node, agent: dict[str, str]) -> Any:
    agent_id = agent["Authorization"].split("_")[1]
    with node.collector.db.read() as conn:
        return conn.execute(select(agents).where(agents.c.id == agent_id)).one()


def _address_count(node: Node, agent: dict[str, str], address: str = "198.51.100.7") -> int:
    agent_id = agent["Authorization"].split("_")[1]
    with node.collector.db.read() as conn:
        return conn.execute(select(agent_addresses.c.count).where(agent_addresses.c.agent_id == agent_id, agent_addresses.c.address == address)).scalar_one()


def _events(node: Node, kind: str) -> int:
    with node.collector.db.read() as conn:
        return conn.execute(select(func.count()).select_from(events).where(events.c.type == kind)).scalar_one()


def _in_memory(node: Node, agent: dict[str, str], clock: FakeClock) -> None:
    """Make ``node`` answer this agent's heartbeats from memory: one synchronous heartbeat, memory fresh."""
    assert node.beat(agent, headers=OFFICE).status_code == 200
    keep_liveness(node.collector)
    seen = _row(node, agent).last_seen_at
    clock.advance(seconds=60)
    assert node.beat(agent, headers=OFFICE).status_code == 200
    assert _row(node, agent).last_seen_at == seen, "a heartbeat answered from memory is not written at once"


def test_liveness_is_written_in_batches_with_the_address_counts(nodes, clock):
    a, b = nodes
    agent = _enroll(a)
    _in_memory(a, agent, clock)
    clock.advance(seconds=60)
    a.beat(agent, headers=OFFICE)
    assert _address_count(a, agent) == 2, "enrollment and the synchronous heartbeat; two more in memory"
    assert a.collector.liveness.flush() == 2, "one agent row and one address record"
    row = _row(b, agent)
    assert row.last_seen_at == clock() and row.last_heartbeat_at == clock() and row.status == "online"
    assert _address_count(b, agent) == 4
    assert a.collector.liveness.flush() == 0

    a.beat(agent, headers={"X-Forwarded-For": "203.0.113.9"})
    assert _address_count(b, agent, "203.0.113.9") == 1, "a new address is recorded at once"


def test_a_changed_report_is_stored_at_once_and_counters_with_the_next_flush(nodes, clock):
    a, b = nodes
    agent = _enroll(a)
    _in_memory(a, agent, clock)
    a.beat(agent, {**REPORT, "spool_depth": 40, "sources": {"files": {"state": "ok", "message": "9 item(s)"}}}, OFFICE)
    assert _row(b, agent).spool_depth == 0, "counters and messages wait for the flush"
    a.collector.liveness.flush()
    row = _row(b, agent)
    assert row.spool_depth == 40 and row.sources == {"files": {"state": "ok", "message": "9 item(s)"}}

    a.beat(agent, {**REPORT, "ruleset_version": "r2", "ruleset_error": "pack x.yar: syntax error"}, OFFICE)
    row = _row(b, agent)
    assert (row.ruleset_version, row.ruleset_error) == ("r2", "pack x.yar: syntax error"), "a changed state is written at once"
    a.beat(agent, {**REPORT, "sources": {"files": {"state": "error", "message": "inotify limit"}}}, OFFICE)
    assert _row(b, agent).sources == {"files": {"state": "error", "message": "inotify limit"}}


def test_an_agent_goes_offline_once_across_collectors_and_comes_back_once(nodes, clock):
    a, b = nodes
    quiet, chatty = _enroll(a, "quiet"), _enroll(a, "chatty")
    _in_memory(a, chatty, clock)
    _in_memory(a, quiet, clock)
    a.collector.liveness.flush()
    clock.advance(seconds=100)
    a.beat(chatty, headers=OFFICE)
    a.collector.liveness.flush()  # the maintenance thread's, within liveness_flush_s
    clock.advance(seconds=100)
    a.beat(chatty, headers=OFFICE)  # still from memory: seen 100 s ago by this collector
    clock.advance(seconds=150)
    assert sweep_offline(b.collector) == 1, "quiet only: chatty's last write is 250 s old, its latest heartbeat in a's memory"
    assert sweep_offline(a.collector) == 0, "a writes its buffer first; quiet is already offline"
    assert _events(b, "agent.offline") == 1
    assert (_row(b, quiet).status, _row(b, chatty).status) == ("offline", "online")

    assert a.beat(quiet, headers=OFFICE).json()["status"] == "online"
    assert _row(b, quiet).status == "offline", "a return is written with the next flush"
    a.collector.liveness.flush()
    assert _row(b, quiet).status == "online" and _row(b, quiet).last_seen_at == clock() and _events(b, "agent.online") == 1
    b.beat(quiet, headers=OFFICE)
    a.beat(quiet, headers=OFFICE)
    a.collector.liveness.flush()
    assert _events(b, "agent.online") == 1


def test_a_buffered_heartbeat_never_brings_an_offline_agent_back(nodes, clock):
    """The race the flush interval makes rare: another collector sweeps an agent whose heartbeats
    this one still holds. The buffered write leaves it offline; its next heartbeat comes back once."""
    a, b = nodes
    agent = _enroll(a)
    _in_memory(a, agent, clock)
    for _ in range(4):
        clock.advance(seconds=100)
        a.beat(agent, headers=OFFICE)  # each from memory: a saw the agent 100 s before
    assert _row(b, agent).last_seen_at < clock() - timedelta(seconds=a.collector.settings.agents.offline_after_s)
    assert sweep_offline(b.collector) == 1
    a.collector.liveness.flush()
    assert _row(b, agent).status == "offline", "the buffered write does not flip it back"
    assert _events(b, "agent.online") == 0
    a.beat(agent, headers=OFFICE)
    a.collector.liveness.flush()
    assert _row(b, agent).status == "online" and _events(b, "agent.online") == 1


def test_a_revoked_agent_is_refused_at_once_where_revoked_and_within_the_refresh_elsewhere(nodes, clock, admin_of):
    a, b = nodes
    first, second = _enroll(a, "ws-1"), _enroll(a, "ws-2")
    _in_memory(a, first, clock)
    _in_memory(b, second, clock)
    _in_memory(a, second, clock)
    first_id, second_id = (h["Authorization"].split("_")[1] for h in (first, second))
    assert a.client.post(f"/api/v1/agents/{first_id}/revoke", headers=admin_of.headers).status_code == 200
    assert a.beat(first, headers=OFFICE).status_code == 403, "refused at once by the collector that revoked it"
    assert b.client.post(f"/api/v1/agents/{second_id}/revoke", headers=admin_of.headers).status_code == 200
    assert b.beat(second, headers=OFFICE).status_code == 403
    wait_for(lambda: a.beat(second, headers=OFFICE).status_code == 403, timeout=REFRESH_S + 30, interval=0.5, message="refused by the other collector")


def test_commands_and_policy_versions_reach_agents_answered_from_memory(nodes, clock, admin_of):
    a, b = nodes
    agent = _enroll(a)
    _in_memory(a, agent, clock)
    assert a.beat(agent, headers=OFFICE).json()["device_policy_version"] is None
    assert a.client.put("/api/v1/vendors/acme-bpo/device-policy", json={"action": "block", "allowed": []}, headers=admin_of.headers).status_code == 200
    assert a.beat(agent, headers=OFFICE).json()["device_policy_version"] == 1, "at once where it was set"
    _in_memory(b, agent, clock)
    assert b.client.put("/api/v1/vendors/acme-bpo/device-policy", json={"action": "audit", "allowed": []}, headers=admin_of.headers).status_code == 200
    wait_for(lambda: a.beat(agent, headers=OFFICE).json()["device_policy_version"] == 2, timeout=REFRESH_S + 30, interval=0.5, message="policy version")

    quarantine_id = str(uuid.uuid4())
    agent_id = agent["Authorization"].split("_")[1]
    _hold(b, agent_id, quarantine_id)
    assert b.client.post(f"/api/v1/quarantine/{quarantine_id}/delete", headers=admin_of.headers).status_code == 202
    expected = [{"id": 1, "op": "delete", "quarantine_id": quarantine_id}]
    assert b.beat(agent, headers=OFFICE).json()["commands"] == expected, "at once where it was made"
    wait_for(lambda: a.beat(agent, headers=OFFICE).json()["commands"] == expected, timeout=REFRESH_S + 30, interval=0.5, message="command")
    assert a.beat(agent, headers=OFFICE).json()["commands"] == expected, "sent again until reported"


def _hold(node: Node, agent_id: str, quarantine_id: str) -> None:
    from server.db.tables import quarantine_items

    now = node.collector.clock()
    with node.collector.db.write() as conn:
        vendor = conn.execute(select(agents.c.vendor_id).where(agents.c.id == agent_id)).scalar_one()
        conn.execute(
            quarantine_items.insert().values(
                quarantine_id=quarantine_id, agent_id=agent_id, vendor=vendor, event_id=str(uuid.uuid4()), original_path="/media/x/a.txt",
                size=1, sha256="0" * 64, ephemeral_key="1" * 64, state="held", created_at=now, updated_at=now,
            )
        )  # fmt: skip


def test_stopping_a_collector_writes_what_it_holds(nodes, clock):
    a, b = nodes
    agent = _enroll(a)
    _in_memory(a, agent, clock)
    a.collector.close()
    assert _row(b, agent).last_seen_at == clock() and _address_count(b, agent) == 3


def test_a_collector_just_started_answers_the_online_fleet_from_memory(nodes, clock):
    a, b = nodes
    agent, other = _enroll(a, "ws-1"), _enroll(a, "ws-2")
    a.beat(agent, headers=OFFICE)
    a.beat(other, {**REPORT, "agent_version": "0.4.0"}, OFFICE)
    a.collector.liveness.flush()
    keep_liveness(b.collector)  # the maintenance thread's first run learns every online agent
    seen = _row(b, agent).last_seen_at
    clock.advance(seconds=30)
    assert b.beat(agent, headers=OFFICE).status_code == 200
    assert _row(b, agent).last_seen_at == seen, "answered from memory"
    b.beat(other, headers=OFFICE)
    assert _row(b, other).agent_version == "0.3.0", "a report that differs from the stored one is written at once"
    b.collector.liveness.flush()
    assert _row(a, agent).last_seen_at == clock() and _address_count(a, agent) == 3


def test_written_through_two_collectors_agree_at_once(nodes, clock):
    a, b = nodes
    for node in nodes:
        node.collector.liveness.write_through()
    agent = _enroll(a)
    _enroll_seen = _row(b, agent).last_seen_at
    clock.advance(seconds=60)
    a.beat(agent, headers=OFFICE)
    keep_liveness(a.collector)
    clock.advance(seconds=60)
    a.beat(agent, headers=OFFICE)
    row = _row(b, agent)
    assert row.last_seen_at == clock() > _enroll_seen and _address_count(b, agent) == 3


def _gone_offline(a: Node, b: Node, clock: FakeClock, *agents_: dict[str, str]) -> None:
    """Every agent offline after an outage, swept by ``a``; ``b`` a collector started during the outage
    (its maintenance thread's first run learned the fleet, offline agents included)."""
    for agent in agents_:
        a.beat(agent, headers=OFFICE)
    a.collector.liveness.flush()
    clock.advance(seconds=a.collector.settings.agents.offline_after_s + 60)
    assert sweep_offline(a.collector) == len(agents_)
    keep_liveness(b.collector)


def test_a_fleet_coming_back_is_answered_from_memory_and_brought_back_in_one_flush(nodes, clock):
    a, b = nodes
    fleet = [_enroll(a, f"ws-{i}") for i in range(3)]
    _gone_offline(a, b, clock, *fleet)
    for agent in fleet:
        assert b.beat(agent, headers=OFFICE).json()["status"] == "online"
        assert _row(a, agent).status == "offline", "answered from memory, nothing written yet"
    assert _events(a, "agent.online") == 0
    assert b.collector.liveness.flush() == 6, "three agent rows and three address records"
    for agent in fleet:
        row = _row(a, agent)
        assert (row.status, row.last_seen_at, row.last_heartbeat_at) == ("online", clock(), clock())
        assert _address_count(a, agent) == 3, "enrollment, the first heartbeat and the return, counted with its flush"
    with a.collector.db.read() as conn:
        raised = conn.execute(select(events.c.agent_id, events.c.source_ip, events.c.origin, events.c.occurred_at).where(events.c.type == "agent.online")).all()
    assert sorted(raised) == sorted((h["Authorization"].split("_")[1], "198.51.100.7", "collector", clock()) for h in fleet)

    clock.advance(seconds=60)
    b.beat(fleet[0], headers=OFFICE)
    b.collector.liveness.flush()
    assert _events(a, "agent.online") == 3, "back once"


def test_two_collectors_hearing_an_agent_again_bring_it_back_once(nodes, clock):
    a, b = nodes
    agent, other = _enroll(a, "ws-1"), _enroll(a, "ws-2")
    keep_liveness(a.collector)
    _gone_offline(a, b, clock, agent, other)
    assert a.beat(agent, headers=OFFICE).status_code == 200
    assert b.beat(agent, headers=OFFICE).status_code == 200
    b.collector.liveness.flush()
    a.collector.liveness.flush()
    assert _row(a, agent).status == "online" and _events(a, "agent.online") == 1, "both buffered a return; one flip, one event"

    b.beat(other, headers=OFFICE)  # a return buffered on b ...
    batch = {"events": [event_record(host="ws-2")]}
    assert a.client.post("/api/v1/events", json=batch, headers={**other, **OFFICE}).status_code == 200  # ... and a synchronous one on a
    assert _row(a, other).status == "online"
    b.collector.liveness.flush()
    assert _events(a, "agent.online") == 2, "the synchronous return raised it; the flush found the agent online"


def test_an_agent_its_own_collector_swept_comes_back_through_memory(nodes, clock):
    a, _ = nodes
    agent = _enroll(a)
    _in_memory(a, agent, clock)
    a.collector.liveness.flush()
    clock.advance(seconds=a.collector.settings.agents.offline_after_s + 60)
    assert sweep_offline(a.collector) == 1
    seen = _row(a, agent).last_seen_at
    assert a.beat(agent, headers=OFFICE).status_code == 200
    assert _row(a, agent).last_seen_at == seen, "answered from memory"
    a.collector.liveness.flush()
    assert _row(a, agent).status == "online" and _events(a, "agent.online") == 1


def test_offline_agents_in_memory_still_show_their_credentials_and_revocations(nodes, clock, admin_of):
    a, b = nodes
    agent, revoked = _enroll(a, "ws-1"), _enroll(a, "ws-2")
    _gone_offline(a, b, clock, agent, revoked)
    forged = {"Authorization": agent["Authorization"][:-4] + ("AAAA" if not agent["Authorization"].endswith("AAAA") else "BBBB")}
    assert b.beat(forged, headers=OFFICE).status_code == 401, "memory checks the credential against the hash it holds"
    revoked_id = revoked["Authorization"].split("_")[1]
    assert a.client.post(f"/api/v1/agents/{revoked_id}/revoke", headers=admin_of.headers).status_code == 200
    wait_for(lambda: b.beat(revoked, headers=OFFICE).status_code == 403, timeout=REFRESH_S + 30, interval=0.5, message="refused by the other collector")
    b.collector.liveness.flush()
    assert _row(a, revoked).status == "revoked", "a return buffered before the refresh does not undo the revocation"
    assert _events(a, "agent.online") == 0


def _id(agent: dict[str, str]) -> str:
    return agent["Authorization"].split("_")[1]


def test_memory_vouches_only_for_the_credentials_of_agents_it_holds(nodes, clock):
    """Admission counts refused batches by the agent memory vouches for (server/api/admission.py), never by what a stranger sends."""
    a, _ = nodes
    agent, unheard = _enroll(a, "ws-1"), _enroll(a, "ws-2")
    a.beat(agent, headers=OFFICE)
    memory = a.collector.liveness
    token = agent["Authorization"].removeprefix("Bearer ")
    assert memory.vouch(token) == _id(agent)
    assert memory.vouch(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")) is None, "a wrong secret"
    assert memory.vouch(unheard["Authorization"].removeprefix("Bearer ")) is None, "an agent this process does not hold"
    assert memory.vouch("") is None and memory.vouch("x" * 5000) is None


def test_agents_offline_beyond_the_horizon_are_neither_learned_nor_kept(nodes, clock, monkeypatch):
    from server import liveness as liveness_module

    a, b = nodes
    gone, recent = _enroll(a, "ws-gone"), _enroll(a, "ws-recent")
    _gone_offline(a, a, clock, gone, recent)
    a.beat(recent, headers=OFFICE)
    a.collector.liveness.flush()
    clock.advance(seconds=a.collector.settings.agents.offline_after_s + 60)
    assert sweep_offline(a.collector) == 1
    clock.advance(seconds=liveness_module.OFFLINE_HORIZON.total_seconds() - a.collector.settings.agents.offline_after_s - 120)
    keep_liveness(b.collector)  # b starts now: ws-gone was last seen over the horizon ago, ws-recent 60 s under it
    assert _id(recent) in b.collector.liveness._known and _id(gone) not in b.collector.liveness._known

    monkeypatch.setattr(liveness_module, "EVICT_EVERY_S", 0.0)
    clock.advance(seconds=600)  # now ws-recent is past the horizon too
    with a.collector.db.read() as conn:
        a.collector.liveness.refresh(conn)
        b.collector.liveness.refresh(conn)
    assert not {_id(gone), _id(recent)} & (a.collector.liveness._known.keys() | b.collector.liveness._known.keys()), "forgotten by the reread"
    assert not {_id(gone), _id(recent)} & (a.collector.liveness._seen.keys() | a.collector.liveness._offline)

    assert b.beat(gone, headers=OFFICE).status_code == 200, "the synchronous path when it returns"
    assert _row(a, gone).status == "online" and _events(a, "agent.online") == 2, "ws-recent's earlier return, and ws-gone's now"
    assert _id(gone) in b.collector.liveness._known, "held again"


def test_one_failing_agent_online_event_loses_no_one_elses_liveness(nodes, clock, monkeypatch):
    from server import liveness as liveness_module

    a, b = nodes
    fleet = [_enroll(a, f"ws-{i}") for i in range(3)]
    _gone_offline(a, b, clock, *fleet)
    for agent in fleet:
        assert b.beat(agent, headers=OFFICE).status_code == 200
    real = liveness_module.event_ingest.raise_agent_event

    def failing(conn: Any, *, agent: Any, **kwargs: Any) -> Any:
        if agent.id == _id(fleet[1]):
            raise RuntimeError("this event cannot be stored")
        return real(conn, agent=agent, **kwargs)

    monkeypatch.setattr(liveness_module.event_ingest, "raise_agent_event", failing)
    b.collector.liveness.flush()
    for agent in (fleet[0], fleet[2]):
        row = _row(a, agent)
        assert (row.status, row.last_seen_at) == ("online", clock()), "the others' returns and liveness written"
    assert _row(a, fleet[1]).status == "offline", "no agent online without its agent.online"

    def raised() -> list[str]:
        with a.collector.db.read() as conn:
            return sorted(conn.execute(select(events.c.agent_id).where(events.c.type == "agent.online")).scalars())

    assert raised() == sorted([_id(fleet[0]), _id(fleet[2])]), "the others' events kept"
    monkeypatch.setattr(liveness_module.event_ingest, "raise_agent_event", real)
    clock.advance(seconds=60)
    assert b.beat(fleet[1], headers=OFFICE).status_code == 200
    b.collector.liveness.flush()
    assert _row(a, fleet[1]).status == "online"
    assert raised() == sorted(_id(agent) for agent in fleet), "its next heartbeat came back with the event, once"


def test_an_agent_swept_by_another_collector_after_it_authenticated_comes_back_with_its_event(nodes, clock, monkeypatch):
    """Read as online, then swept offline by another collector (PostgreSQL, read committed) before this
    heartbeat's UPDATE: the write is conditional, so the agent comes back through the flip, with one agent.online."""
    from server.api import agent_routes

    a, _ = nodes
    a.collector.liveness.write_through()  # every heartbeat the synchronous way
    agent, other = _enroll(a, "ws-1"), _enroll(a, "ws-2")
    real = agent_routes.agents.authenticate

    def swept_meanwhile(conn: Any, *, value: str | None) -> Any:
        identity = real(conn, value=value)
        conn.execute(agents.update().where(agents.c.id == identity.id).values(status="offline"))  # the other collector's sweep
        return identity

    monkeypatch.setattr(agent_routes.agents, "authenticate", swept_meanwhile)
    assert a.beat(agent, headers=OFFICE).status_code == 200
    assert _row(a, agent).status == "online" and _row(a, agent).last_heartbeat_at == clock()
    assert _events(a, "agent.online") == 1

    monkeypatch.setattr(agent_routes.agents, "authenticate", real)
    with a.collector.db.write() as conn:  # an agent call that only touches (ingest, signatures)
        identity = real(conn, value=other["Authorization"].removeprefix("Bearer "))
        conn.execute(agents.update().where(agents.c.id == identity.id).values(status="offline"))
        agent_routes.record_agent_call(conn, a.collector, identity, "198.51.100.7")
    assert _row(a, other).status == "online" and _row(a, other).last_seen_at == clock()
    assert _events(a, "agent.online") == 2


def test_an_agent_revoked_by_another_collector_after_it_authenticated_is_refused(nodes, clock, monkeypatch):
    """Read as online, then revoked on another collector before this heartbeat's conditional UPDATE:
    refused as authenticate would refuse it now, nothing written, and memory does not learn it."""
    from server.api import agent_routes

    a, _ = nodes
    a.collector.liveness.write_through()
    agent = _enroll(a, "ws-1")
    real = agent_routes.agents.authenticate
    revoked: list[str] = []

    def revoked_meanwhile(conn: Any, *, value: str | None) -> Any:
        identity = real(conn, value=value)
        conn.execute(agents.update().where(agents.c.id == identity.id).values(status="revoked"))  # the other collector's revocation
        revoked.append(identity.id)
        return identity

    monkeypatch.setattr(agent_routes.agents, "authenticate", revoked_meanwhile)
    assert a.beat(agent, headers=OFFICE).status_code == 403
    assert revoked and _row(a, agent).status == "online", "the refused call's transaction rolled back (the revocation was the test's own write in it)"
    assert _row(a, agent).last_heartbeat_at is None
    assert _events(a, "agent.online") == 0
    assert not a.collector.liveness.vouch(agent["Authorization"].removeprefix("Bearer "))
