"""IP records: the session log, denied networks (agents, enrollment, logins, API calls), unusual-login events."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from server.db.tables import alert_outbox, audit_log, denied_calls, events, login_attempts
from server.netaddr import Asn
from server.siem.cef import format_cef
from server.store import outbox, vendors
from server.store import users as user_store
from tests.collector_env import Person, enrollment_token, event_record

HOME, OFFICE, ABROAD, BAD = "198.51.100.20", "198.51.100.30", "203.0.113.9", "192.0.2.77"
BAD_RANGE = "192.0.2.0/24"


@pytest.fixture
def settings_toml() -> str:
    # The test client is the trusted proxy, so X-Forwarded-For chooses each request's address;
    # medium events alert, so the access events' outbox rows can be seen.
    return """
[network]
trusted_proxies = ["127.0.0.1/32"]

[alerts]
min_severity = "medium"
webhook_url = "https://127.0.0.1:9/hook"
"""


class FixedGeo:
    """The collector's country and ASN lookup, answering from a table (the real data does not know test ranges)."""

    def __init__(self, table: dict[str, tuple[str, str]]) -> None:
        self.table = table

    def country(self, address: str) -> str | None:
        return self.table[address][0] if address in self.table else None

    def asn(self, address: str) -> Asn | None:
        return Asn(self.table[address][1], f"{address}/32") if address in self.table else None


@pytest.fixture
def geo(collector: Any) -> FixedGeo:
    fixed = FixedGeo({HOME: ("DE", "Telekom"), OFFICE: ("DE", "Vodafone"), ABROAD: ("BR", "Claro"), BAD: ("RU", "Bulletproof")})
    collector.countries = fixed
    return fixed


def _from(address: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    return {**(headers or {}), "X-Forwarded-For": address}


def _login(client: Any, person: Person, address: str, password: str | None = None) -> Any:
    body = {"username": person.name, "password": password or person.password}
    return client.post("/api/v1/auth/login", json=body, headers=_from(address))


def _heartbeat(client: Any, agent: Any, address: str) -> int:
    return client.post("/api/v1/heartbeat", json={"agent_version": "0.1.0"}, headers=_from(address, agent.headers)).status_code


def _access_events(client: Any, person: Person, kind: str) -> list[dict[str, Any]]:
    answer = client.get("/api/v1/events", params={"channel": "access"}, headers=person.headers)
    assert answer.status_code == 200, answer.text
    return [item for item in answer.json()["items"] if item["type"] == kind]


def _scoped_reviewer(collector: Any, name: str, vendor: str) -> Person:
    with collector.db.write() as conn:
        vendor_id, _ = vendors.get_or_create(conn, name=vendor, now=collector.clock())
        user, password, token = user_store.create(conn, name=name, role="reviewer", now=collector.clock(), vendor_ids=(vendor_id,))
    return Person(user.name, password, token)


def _refusals(collector: Any) -> dict[tuple[str, str], int]:
    with collector.db.read() as conn:
        return {(r.kind, r.address): r.count for r in conn.execute(select(denied_calls))}


# --- session log ---------------------------------------------------------------------------------


def test_sessions_record_address_country_asn_and_their_end(client, collector, geo, admin, reviewer):
    first = _login(client, reviewer, HOME)
    assert first.status_code == 200, first.text
    collector.clock.advance(minutes=5)
    second = _login(client, reviewer, OFFICE)
    collector.clock.advance(minutes=5)
    assert client.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {first.json()['token']}"}).status_code == 200

    listed = client.get("/api/v1/sessions", params={"user": reviewer.name}, headers=admin.headers)
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert page["total"] == 2
    newest, oldest = page["items"]
    assert (newest["address"], newest["country"], newest["asn"]["name"], newest["state"], newest["ended_at"]) == (OFFICE, "DE", "Vodafone", "active", None)
    assert (oldest["address"], oldest["country"], oldest["state"]) == (HOME, "DE", "logout")
    assert oldest["ended_at"] == "2026-11-24T09:10:00.000Z" and oldest["started_at"] == "2026-11-24T09:00:00.000Z"

    assert [s["address"] for s in client.get("/api/v1/sessions", params={"state": "logout"}, headers=admin.headers).json()["items"]] == [HOME]
    assert client.get("/api/v1/sessions", params={"address": "198.51.100.3"}, headers=admin.headers).json()["total"] == 1
    collector.clock.advance(hours=collector.settings.auth.session_hours)
    expired = client.get("/api/v1/sessions", params={"state": "expired"}, headers=admin.headers).json()["items"]
    assert [(s["address"], s["ended_at"]) for s in expired] == [(OFFICE, second.json()["expires_at"])], "expiry is the end otherwise"
    assert client.get("/api/v1/sessions", params={"state": "gone"}, headers=admin.headers).status_code == 422
    assert client.get("/api/v1/sessions", headers=reviewer.headers).status_code == 403


# --- denylists -----------------------------------------------------------------------------------


def test_the_session_log_refuses_a_since_without_a_time_zone(client, admin):
    def since(value: str) -> Any:
        return client.get("/api/v1/sessions", params={"since": value}, headers=admin.headers)

    naive = since("2026-01-01T00:00:00")
    assert naive.status_code == 422 and "time zone" in naive.json()["detail"]
    assert since("0001-01-01T00:00:00+14:00").status_code == 422
    assert since("2026-01-01T00:00:00Z").status_code == 200


def test_a_collector_wide_range_refuses_agents_enrollment_logins_and_api_calls(client, collector, geo, admin, reviewer, enroll):
    agent = enroll()
    added = client.post("/api/v1/denylist", json={"cidr": BAD_RANGE, "note": "abuse"}, headers=admin.headers)
    assert added.status_code == 201, added.text
    assert client.post("/api/v1/denylist", json={"cidr": "192.0.2.1/24"}, headers=admin.headers).status_code == 422, "host bits are a typo"

    assert _heartbeat(client, agent, BAD) == 403
    assert _heartbeat(client, agent, BAD) == 403
    assert _heartbeat(client, agent, HOME) == 200
    ingest = client.post("/api/v1/events", json={"events": [event_record()]}, headers=_from(BAD, agent.headers))
    assert ingest.status_code == 403
    token = enrollment_token(collector)
    enrolling = client.post("/api/v1/enroll", json={"token": token, "hostname": "ws-9", "os": "linux"}, headers=_from(BAD))
    assert enrolling.status_code == 403
    assert len(client.get("/api/v1/agents", headers=admin.headers).json()["items"]) == 1, "the refused enrollment made no agent"
    assert _login(client, reviewer, BAD).status_code == 403
    assert client.get("/api/v1/events", headers=_from(BAD, reviewer.headers)).status_code == 403

    assert _refusals(collector) == {("agent", BAD): 3, ("enroll", BAD): 1, ("login", BAD): 1, ("api", BAD): 1}
    with collector.db.read() as conn:
        reasons = conn.execute(select(login_attempts.c.user_name, login_attempts.c.reason, login_attempts.c.country).where(login_attempts.c.address == BAD)).all()
    assert reasons == [(reviewer.name, "denied_network", "RU")]
    listing = client.get("/api/v1/denylist", headers=admin.headers).json()
    assert [(e["cidr"], e["vendor"], e["note"]) for e in listing["items"]] == [(BAD_RANGE, None, "abuse")]
    assert {(r["kind"], r["count"]) for r in listing["refusals"]} == {("agent", 3), ("enroll", 1), ("login", 1), ("api", 1)}

    assert client.delete(f"/api/v1/denylist/{added.json()['id']}", headers=admin.headers).status_code == 200
    assert _heartbeat(client, agent, BAD) == 200, "removal restores"
    assert _login(client, reviewer, BAD).status_code == 200
    with collector.db.read() as conn:
        actions = conn.execute(select(audit_log.c.actor, audit_log.c.action).where(audit_log.c.action.like("denylist.%"))).all()
    assert actions == [(admin.name, "denylist.add"), (admin.name, "denylist.remove")]


def test_a_vendors_range_refuses_only_that_vendors_agents_and_scoped_accounts(client, collector, geo, admin, enroll):
    ours, theirs = enroll(vendor="acme-bpo"), enroll(vendor="globex", hostname="ws-2")
    added = client.post("/api/v1/denylist", json={"cidr": BAD_RANGE, "vendor": "acme-bpo"}, headers=admin.headers)
    assert added.status_code == 201 and added.json()["vendor"] == "acme-bpo"
    assert client.post("/api/v1/denylist", json={"cidr": BAD_RANGE, "vendor": "nobody"}, headers=admin.headers).status_code == 404

    assert _heartbeat(client, ours, BAD) == 403
    assert _heartbeat(client, theirs, BAD) == 200
    enrolling = client.post("/api/v1/enroll", json={"token": enrollment_token(collector, "acme-bpo"), "hostname": "ws-3"}, headers=_from(BAD))
    assert enrolling.status_code == 403, "enrollment checks the token's vendor"
    other = client.post("/api/v1/enroll", json={"token": enrollment_token(collector, "globex"), "hostname": "ws-4"}, headers=_from(BAD))
    assert other.status_code == 200

    acme_lead = _scoped_reviewer(collector, "sam", "acme-bpo")
    globex_reviewer = _scoped_reviewer(collector, "gil", "globex")
    refused = _login(client, acme_lead, BAD)
    unknown = _login(client, Person("nobody-here", "wrong", ""), BAD)
    # Refused as a wrong password is: a 403 for scoped names alone would tell which names exist.
    assert refused.status_code == unknown.status_code == 401 and refused.json() == unknown.json()
    with collector.db.read() as conn:
        reasons = [r.reason for r in conn.execute(select(login_attempts.c.reason).where(login_attempts.c.user_name == "sam"))]
    assert reasons == ["denied_network"]
    assert _login(client, globex_reviewer, BAD).status_code == 200
    assert _login(client, admin, BAD).status_code == 200, "an unscoped account answers to the collector-wide list only"
    assert client.get("/api/v1/events", headers=_from(BAD, acme_lead.headers)).status_code == 403
    assert _refusals(collector) == {("agent", BAD): 1, ("enroll", BAD): 1, ("login", BAD): 1, ("api", BAD): 1}


def test_a_login_refused_by_a_vendors_range_spends_a_password_check(client, collector, geo, admin, monkeypatch):
    """Every other failed login costs an argon2 check: a denied scoped name that answered at once would stand out by timing."""
    from server import credentials

    scoped = _scoped_reviewer(collector, "sam", "acme-bpo")
    assert client.post("/api/v1/denylist", json={"cidr": BAD_RANGE, "vendor": "acme-bpo"}, headers=admin.headers).status_code == 201
    checked: list[str] = []
    monkeypatch.setattr(credentials, "dummy_password_check", checked.append)
    assert _login(client, scoped, BAD).status_code == 401
    assert checked == [scoped.password]


def test_without_asn_lookup_logins_are_judged_by_country_alone(client, collector, geo, admin, reviewer):
    collector.settings.network.asn_lookup = False  # network.asn_lookup = false: the ASN data is never loaded
    assert _login(client, reviewer, HOME).status_code == 200
    collector.clock.advance(minutes=5)
    assert _login(client, reviewer, OFFICE).status_code == 200, "same country, another network: nothing new without ASNs"
    with collector.db.read() as conn:
        raised = [r.body for r in conn.execute(select(events.c.body).where(events.c.type == "access.unusual_login"))]
    assert raised == []
    items = client.get("/api/v1/sessions", params={"user": reviewer.name}, headers=admin.headers).json()["items"]
    assert [(s["address"], s["country"], s["asn"]) for s in items] == [(OFFICE, "DE", None), (HOME, "DE", None)]
    assert _login(client, reviewer, ABROAD).status_code == 200
    with collector.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(events).where(events.c.type == "access.unusual_login")).scalar_one() == 1


def test_the_matcher_finds_ranges_of_every_length_and_family(collector):
    matcher = collector.denied
    matcher.replace([("10.0.0.0/8", None), ("192.0.2.128/25", 7), ("2001:db8::/32", 8), ("198.51.100.7/32", 7), ("0.0.0.0/0", 9)])
    with collector.db.read() as conn:
        matcher._loaded_at = float("inf")  # keep the table just set: no reload from the empty database
        assert matcher.lists_holding(conn, "10.200.1.1") == {None, 9}
        assert matcher.lists_holding(conn, "192.0.2.200") == {7, 9}
        assert matcher.lists_holding(conn, "192.0.2.100") == {9}
        assert matcher.lists_holding(conn, "198.51.100.7") == {7, 9}
        assert matcher.lists_holding(conn, "2001:db8:1::5") == {8}
        assert matcher.lists_holding(conn, "2001:db9::5") == set()
        assert matcher.lists_holding(conn, "not an address") == set()
    matcher.invalidate()
    with collector.db.read() as conn:
        assert matcher.lists_holding(conn, "10.200.1.1") == set(), "an invalidated table is reloaded from the database"


# --- unusual logins and failed logins ------------------------------------------------------------


def test_a_new_country_raises_an_access_event_but_the_first_login_does_not(client, collector, geo, admin, reviewer, enroll):
    assert _login(client, reviewer, HOME).status_code == 200
    assert _access_events(client, admin, "access.unusual_login") == [], "the first login has nothing to compare with"
    assert _login(client, reviewer, HOME).status_code == 200
    assert _login(client, reviewer, OFFICE).status_code == 200, "same country, a new network"
    assert _login(client, reviewer, ABROAD).status_code == 200
    raised = _access_events(client, admin, "access.unusual_login")
    assert [(e["new"], e["source_ip"]) for e in raised] == [(["country", "asn"], ABROAD), (["asn"], OFFICE)]
    event = raised[0]
    assert (event["user"], event["country"], event["asn"]["name"], event["severity"], event["origin"]) == (reviewer.name, "BR", "Claro", "medium", "collector")
    assert event["agent_id"] is None and event["vendor"] is None and event["channel"] == "access"
    assert _login(client, reviewer, ABROAD).status_code == 200
    assert len(_access_events(client, admin, "access.unusual_login")) == 2, "a country seen before raises nothing"

    detail = client.get(f"/api/v1/events/{event['id']}", headers=admin.headers)
    assert detail.status_code == 200 and detail.json()["type"] == "access.unusual_login"
    with collector.db.read() as conn:
        assert conn.execute(select(alert_outbox.c.target).where(alert_outbox.c.event_seq == event["seq"])).scalars().all() == ["webhook"]

    with collector.db.write() as conn:
        claimed = outbox.claim(conn, now=collector.clock(), lease=timedelta(minutes=1), limit=10)
    sent = [alert for _, _, alert in claimed if alert["id"] == event["id"]]
    assert sent and sent[0]["asn"] == {"name": "Claro", "network": f"{ABROAD}/32"}, "the forwarder sends it like an agent event"
    line = format_cef(sent[0], product_version="test")
    assert "access.unusual_login" in line and f"src={ABROAD}" in line

    scoped = _scoped_reviewer(collector, "sam", "acme-bpo")
    assert _access_events(client, scoped, "access.unusual_login") == []
    assert client.get(f"/api/v1/events/{event['id']}", headers=scoped.headers).status_code == 404


def test_repeated_failed_logins_raise_one_event_per_window(client, collector, geo, admin, reviewer):
    for address in (HOME, HOME, OFFICE, OFFICE):
        assert _login(client, reviewer, address, password="guess").status_code == 401
    assert _access_events(client, admin, "access.failed_logins") == []
    assert _login(client, reviewer, ABROAD, password="guess").status_code == 401
    assert _login(client, reviewer, ABROAD, password="guess").status_code == 401
    raised = _access_events(client, admin, "access.failed_logins")
    assert [(e["by"], e["user"], e["failures"], e["severity"]) for e in raised] == [("name", reviewer.name, 5, "high")], "once per window"

    collector.clock.advance(minutes=11)
    # Names of no account are often passwords typed into the name field: the event counts them, never shows them.
    for name in ("Summer2026!", "user1", reviewer.name, "user3", "user4"):
        assert client.post("/api/v1/auth/login", json={"username": name, "password": "x"}, headers=_from(BAD)).status_code == 401
    raised = _access_events(client, admin, "access.failed_logins")
    assert [(e["by"], e.get("names"), e.get("other_names"), e["source_ip"]) for e in raised][0] == ("address", [reviewer.name], 4, BAD)
    assert len(raised) == 2
    assert "Summer2026!" not in json.dumps(raised)


# --- UI pages ------------------------------------------------------------------------------------


def _ui_login(client: Any, person: Person, address: str = HOME) -> str:
    form = client.get("/ui/login", headers=_from(address))
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text).group(1)
    answer = client.post("/ui/login", data={"username": person.name, "password": person.password, "nonce": nonce}, headers=_from(address), follow_redirects=False)
    assert answer.status_code == 303, answer.text
    page = client.get("/ui/events", headers=_from(address))
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def test_ui_pages_show_sessions_and_change_the_denylist(client, collector, geo, admin, reviewer, enroll):
    agent = enroll()
    assert _login(client, reviewer, HOME).status_code == 200
    csrf = _ui_login(client, admin)
    sessions = client.get("/ui/sessions", headers=_from(HOME))
    assert sessions.status_code == 200 and HOME in sessions.text and "Telekom" in sessions.text and "active" in sessions.text
    assert "No sessions match." in client.get("/ui/sessions?user=nobody", headers=_from(HOME)).text

    refused = client.post("/ui/denylist", data={"cidr": BAD_RANGE, "note": "abuse"}, headers=_from(HOME), follow_redirects=False)
    assert refused.status_code == 403, "a post without the session's CSRF token changes nothing"
    added = client.post("/ui/denylist", data={"cidr": BAD_RANGE, "note": "abuse", "csrf": csrf}, headers=_from(HOME), follow_redirects=False)
    assert added.status_code == 303
    bad = client.post("/ui/denylist", data={"cidr": "nonsense", "csrf": csrf}, headers=_from(HOME))
    assert bad.status_code == 422 and "not a CIDR range" in bad.text
    assert _heartbeat(client, agent, BAD) == 403
    page = client.get("/ui/denylist", headers=_from(HOME))
    assert BAD_RANGE in page.text and "abuse" in page.text and BAD in page.text
    entry_id = client.get("/api/v1/denylist", headers=admin.headers).json()["items"][0]["id"]
    assert client.post(f"/ui/denylist/{entry_id}/remove", data={"csrf": csrf}, headers=_from(HOME), follow_redirects=False).status_code == 303
    assert _heartbeat(client, agent, BAD) == 200

    client.cookies.clear()
    _ui_login(client, reviewer)
    assert client.get("/ui/sessions", headers=_from(HOME)).status_code == 403
    assert client.get("/ui/denylist", headers=_from(HOME)).status_code == 403


def test_a_denied_ui_login_says_why(client, collector, geo, admin):
    assert client.post("/api/v1/denylist", json={"cidr": BAD_RANGE}, headers=admin.headers).status_code == 201
    form = client.get("/ui/login", headers=_from(BAD))
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text).group(1)
    answer = client.post("/ui/login", data={"username": admin.name, "password": admin.password, "nonce": nonce}, headers=_from(BAD))
    assert answer.status_code == 403 and "refused" in answer.text


def test_an_open_ui_session_is_refused_once_its_network_is_denied(client, collector, geo, admin, reviewer):
    _ui_login(client, reviewer, BAD)
    assert client.get("/ui/events", headers=_from(BAD)).status_code == 200
    assert client.post("/api/v1/denylist", json={"cidr": BAD_RANGE}, headers=admin.headers).status_code == 201
    refused = client.get("/ui/events", headers=_from(BAD))
    assert refused.status_code == 403 and "refused" in refused.text
    assert client.get("/ui/events", headers=_from(HOME)).status_code == 200
    assert _refusals(collector) == {("ui", BAD): 1}


def test_access_events_appear_in_the_ui_list_detail_and_export(client, collector, geo, admin, reviewer):
    assert _login(client, reviewer, HOME).status_code == 200
    assert _login(client, reviewer, ABROAD).status_code == 200
    event = _access_events(client, admin, "access.unusual_login")[0]
    csrf = _ui_login(client, admin)
    listed = client.get("/ui/events?channel=access", headers=_from(HOME))
    assert listed.status_code == 200 and event["id"] in listed.text
    detail = client.get(f"/ui/events/{event['id']}", headers=_from(HOME))
    assert detail.status_code == 200 and "access.unusual_login" in detail.text
    exported = client.post("/ui/events/export", data={"format": "csv", "csrf": csrf, "channel": "access"}, headers=_from(HOME))
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["id"], r["type"], r["vendor"], r["agent_id"]) for r in rows] == [(event["id"], "access.unusual_login", "", "")]
    lines = client.post("/ui/events/export", data={"format": "jsonl", "csrf": csrf, "channel": "access"}, headers=_from(HOME)).text.splitlines()
    assert json.loads(lines[0])["asn"]["name"] == "Claro"


# --- CLI -----------------------------------------------------------------------------------------


def _dlp_server(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_adds_lists_and_removes_denied_ranges_with_audit(tmp_path: Path, database_url: str):
    env = {**os.environ, "DLP_DATABASE_URL": database_url}
    data_dir = str(tmp_path / "collector")
    assert _dlp_server("init", "--data-dir", data_dir, "--json", env=env).returncode == 0
    assert _dlp_server("vendor", "ranges", "acme-bpo", "--data-dir", data_dir, env=env).returncode == 0
    wide = _dlp_server("denylist", "add", BAD_RANGE, "--note", "abuse", "--data-dir", data_dir, "--json", env=env)
    assert wide.returncode == 0, wide.stderr
    ours = _dlp_server("denylist", "add", "2001:db8::/32", "--vendor", "acme-bpo", "--data-dir", data_dir, env=env)
    assert ours.returncode == 0 and "for acme-bpo" in ours.stdout
    typo = _dlp_server("denylist", "add", "192.0.2.1/24", "--data-dir", data_dir, env=env)
    assert typo.returncode == 1 and "host bits" in typo.stderr
    listed = json.loads(_dlp_server("denylist", "list", "--data-dir", data_dir, "--json", env=env).stdout)
    assert [(e["cidr"], e["vendor"], e["note"]) for e in listed["items"]] == [(BAD_RANGE, None, "abuse"), ("2001:db8::/32", "acme-bpo", "")]
    assert "every caller" in _dlp_server("denylist", "list", "--data-dir", data_dir, env=env).stdout
    removed = _dlp_server("denylist", "remove", str(json.loads(wide.stdout)["id"]), "--data-dir", data_dir, env=env)
    assert removed.returncode == 0, removed.stderr
    assert _dlp_server("denylist", "remove", "999", "--data-dir", data_dir, env=env).returncode == 1
    left = json.loads(_dlp_server("denylist", "list", "--data-dir", data_dir, "--json", env=env).stdout)["items"]
    assert [e["cidr"] for e in left] == ["2001:db8::/32"]
    from sqlalchemy import create_engine

    engine = create_engine(database_url)
    with engine.connect() as conn:
        actions = conn.execute(select(audit_log.c.action, audit_log.c.target).where(audit_log.c.action.like("denylist.%")).order_by(audit_log.c.seq)).all()
    engine.dispose()
    assert [a for a, _ in actions] == ["denylist.add", "denylist.add", "denylist.remove"] and actions[0].target == actions[2].target
