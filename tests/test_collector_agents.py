"""Enrollment, heartbeats, liveness and IP-address records, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from server.maintenance import purge_expired_addresses, sweep_offline
from tests.collector_env import enrollment_token, event_record


def _enroll_body(token: str, hostname: str = "ws-9") -> dict:
    return {"token": token, "hostname": hostname, "os": "linux", "agent_version": "0.1.0"}


def test_enrollment_token_limits_uses_and_expiry(client, collector, clock):
    token = enrollment_token(collector, uses=2)
    assert client.post("/api/v1/enroll", json=_enroll_body(token, "a")).status_code == 200
    assert client.post("/api/v1/enroll", json=_enroll_body(token, "b")).status_code == 200
    used_up = client.post("/api/v1/enroll", json=_enroll_body(token, "c"))
    assert used_up.status_code == 401 and "used up" in used_up.json()["detail"]

    expiring = enrollment_token(collector, lifetime=timedelta(hours=1))
    clock.advance(hours=2)
    expired = client.post("/api/v1/enroll", json=_enroll_body(expiring))
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    assert client.post("/api/v1/enroll", json=_enroll_body("dlpe_00ff_forged")).status_code == 401


def test_enrollment_returns_a_credential_stored_only_as_a_hash(client, collector, enroll):
    from sqlalchemy import select

    from server.db.tables import agents

    agent = enroll()
    with collector.db.read() as conn:
        stored = conn.execute(select(agents.c.secret_hash).where(agents.c.id == agent.id)).scalar_one()
    secret = agent.credential.split("_", 2)[2]
    assert secret not in stored and len(stored) == 64


def test_heartbeat_updates_agent_health(client, enroll, admin):
    agent = enroll()
    report = {"agent_version": "0.2.0", "ruleset_version": "abc123", "spool_depth": 17, "dropped": 2, "sources": {"files": "ok", "usb": "polling"}}
    response = client.post("/api/v1/heartbeat", json=report, headers=agent.headers)
    assert response.status_code == 200 and response.json()["heartbeat_interval_s"] == 60
    (listed,) = client.get("/api/v1/agents", headers=admin.headers).json()["items"]
    assert listed["id"] == agent.id and listed["status"] == "online"
    assert (listed["agent_version"], listed["ruleset_version"], listed["spool_depth"], listed["dropped"]) == ("0.2.0", "abc123", 17, 2)
    assert listed["sources"] == {"files": "ok", "usb": "polling"}


def test_silent_agent_goes_offline_once_and_raises_an_event(client, collector, clock, enroll, admin):
    quiet, chatty = enroll(hostname="quiet"), enroll(hostname="chatty")
    clock.advance(seconds=collector.settings.agents.offline_after_s - 10)
    client.post("/api/v1/heartbeat", json={"agent_version": "0.1.0"}, headers=chatty.headers)
    clock.advance(seconds=20)
    assert sweep_offline(collector) == 1
    assert sweep_offline(collector) == 0
    statuses = {a["hostname"]: a["status"] for a in client.get("/api/v1/agents", headers=admin.headers).json()["items"]}
    assert statuses == {"quiet": "offline", "chatty": "online"}
    (event,) = client.get("/api/v1/events", params={"type": "agent.offline"}, headers=admin.headers).json()["items"]
    assert event["agent_id"] == quiet.id and event["channel"] == "agent" and event["silent_for_s"] >= 300

    client.post("/api/v1/heartbeat", json={"agent_version": "0.1.0"}, headers=quiet.headers)
    back = client.get("/api/v1/events", params={"type": "agent.online"}, headers=admin.headers).json()["items"]
    assert [e["agent_id"] for e in back] == [quiet.id]


def test_addresses_are_recorded_per_agent_with_first_last_and_count(client, enroll, admin):
    agent = enroll()
    for _ in range(3):
        client.post("/api/v1/heartbeat", json={"agent_version": "0.1.0"}, headers=agent.headers)
    (listed,) = client.get("/api/v1/agents", headers=admin.headers).json()["items"]
    (record,) = listed["ip_addresses"]
    assert record["address"] == "127.0.0.1" and record["count"] == 4  # enrollment + 3 heartbeats
    assert record["country"] is None  # loopback has none


@pytest.fixture
def settings_toml() -> str:
    return '[network]\ntrusted_proxies = ["127.0.0.0/8"]\nip_retention_days = 30\n'


def test_forwarded_for_is_believed_from_a_trusted_proxy_and_unexpected_ranges_alert(client, collector, enroll, admin):
    assert client.post("/api/v1/vendors", json={"name": "acme-bpo", "allowed_cidrs": ["198.51.100.0/24"]}, headers=admin.headers).status_code == 201
    office = {"X-Forwarded-For": "203.0.113.9, 198.51.100.20"}
    agent = enroll(headers=office)
    client.post("/api/v1/heartbeat", json={"agent_version": "0.1.0"}, headers={**agent.headers, **office})
    assert client.get("/api/v1/events", params={"type": "agent.unexpected_ip"}, headers=admin.headers).json()["items"] == []

    away = {"X-Forwarded-For": "8.8.8.8"}
    for _ in range(2):
        client.post("/api/v1/events", json={"events": [event_record()]}, headers={**agent.headers, **away})
    raised = client.get("/api/v1/events", params={"type": "agent.unexpected_ip"}, headers=admin.headers).json()["items"]
    assert len(raised) == 1, "one event per new address, not one per call"
    assert raised[0]["address"] == "8.8.8.8" and raised[0]["severity"] == "high" and raised[0]["source_country"] == "US"
    (listed,) = client.get("/api/v1/agents", headers=admin.headers).json()["items"]
    by_address = {r["address"]: r for r in listed["ip_addresses"]}
    assert by_address["198.51.100.20"]["expected"] is True
    assert by_address["8.8.8.8"]["expected"] is False and by_address["8.8.8.8"]["country"] == "US"
    assert listed["unexpected_ip"] is True
    stored = client.get("/api/v1/events", params={"channel": "usb"}, headers=admin.headers).json()["items"][0]
    assert stored["source_ip"] == "8.8.8.8"


def test_addresses_are_erased_after_the_retention_period(client, collector, clock, enroll, admin):
    agent = enroll(headers={"X-Forwarded-For": "8.8.4.4"})
    client.post("/api/v1/events", json={"events": [event_record()]}, headers={**agent.headers, "X-Forwarded-For": "8.8.4.4"})
    client.post("/api/v1/auth/login", json={"username": admin.name, "password": admin.password}, headers={"X-Forwarded-For": "8.8.4.4"})
    clock.advance(days=29)
    assert not any(purge_expired_addresses(collector).values())
    clock.advance(days=2)
    erased = purge_expired_addresses(collector)
    assert erased["agent_addresses"] == 1 and erased["events"] == 1 and erased["user_addresses"] >= 1
    (listed,) = client.get("/api/v1/agents", headers=admin.headers).json()["items"]
    assert listed["ip_addresses"] == [] and listed["last_ip"] is None
    (stored,) = client.get("/api/v1/events", params={"channel": "usb"}, headers=admin.headers).json()["items"]
    assert stored["source_ip"] is None and stored["source_country"] is None


def test_untrusted_peer_cannot_spoof_forwarded_for(collector, enroll, admin):
    from fastapi.testclient import TestClient

    from server.api.app import create_app

    with TestClient(create_app(collector), client=("192.0.2.77", 4000)) as outsider:
        token = enrollment_token(collector)
        outsider.post("/api/v1/enroll", json=_enroll_body(token), headers={"X-Forwarded-For": "198.51.100.1"})
        items = outsider.get("/api/v1/agents", headers=admin.headers).json()["items"]
    assert [r["address"] for r in items[0]["ip_addresses"]] == ["192.0.2.77"]
