"""Fleet pages under a vendor scope (SQLite and PostgreSQL): a reviewer scoped to one vendor and that
vendor's lead see nothing of another vendor's agents, IP records, figures, device and egress policies
or quarantined files, through the API, the UI and the store; an unscoped reviewer sees both."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from server.db.tables import vendors as vendor_table
from server.store import quarantine, stats
from server.store.scope import Scope
from tests.collector_env import Person, event_record, send_events
from tests.test_collector_quarantine import Sealed, _collector_key, _quarantined
from tests.test_ui_views import _log_in

ACME, GLOBEX = "acme-bpo", "globex-it"


@dataclass
class Fleet:
    acme: Any
    globex: Any
    acme_id: int
    globex_id: int
    scoped: Person
    lead: Person


def _person(collector: Any, name: str, role: str, vendor_ids: tuple[int, ...]) -> Person:
    from server.store import users

    with collector.db.write() as conn:
        user, password, token = users.create(conn, name=name, role=role, vendor_ids=vendor_ids, now=collector.clock())
    return Person(user.name, password, token)


def _event(user: str, serial: str, rule: str) -> dict[str, Any]:
    record = event_record(user=user, path=f"/media/{user}/STICK/x.zip")
    record["device"] = {**record["device"], "serial": serial, "mountpoint": f"/media/{user}/STICK"}
    record["matches"] = [{**record["matches"][0], "rule": rule}]
    return record


@pytest.fixture
def fleet(client: Any, collector: Any, admin: Person, enroll: Any) -> Fleet:
    """Two vendors, each with an agent, events (acme 2, globex 3), a device policy with an exception,
    an egress policy and a quarantined file; a reviewer scoped to acme and acme's lead."""
    acme, globex = enroll(vendor=ACME, hostname="ws-acme"), enroll(vendor=GLOBEX, hostname="ws-globex")
    send_events(client, acme, _event("jdoe", "ACME0001", "acme_rule"), _event("jdoe", "ACME0001", "acme_rule"))
    send_events(client, globex, *(_event("gsmith", "GLOBEX01", "globex_rule") for _ in range(3)))
    staff = {ACME: ("jdoe", "ACME0001", "acme migration", "git.acme.example/**"), GLOBEX: ("gsmith", "GLOBEX01", "globex secret reason", "git.globex.example/**")}
    for agent in (acme, globex):
        user, serial, reason, pattern = staff[agent.vendor]
        key = _collector_key(client, admin, agent)  # sets the vendor's device policy
        held = _quarantined(Sealed(key, b"ledger"), path=f"/media/{user}/STICK/ledger.txt")
        send_events(client, agent, {**held, "user": user, "device": {**held["device"], "serial": serial}})
        granted = client.post(
            f"/api/v1/vendors/{agent.vendor}/device-exceptions",
            json={"vendor_id": "1234", "product_id": "abcd", "serial": "SN-1", "duration": "4h", "reason": reason},
            headers=admin.headers,
        )
        assert granted.status_code == 201, granted.text
        put = client.put(f"/api/v1/vendors/{agent.vendor}/egress-policy", json={"allowed_remotes": [pattern], "report_allowed": True}, headers=admin.headers)
        assert put.status_code == 200, put.text
    with collector.db.read() as conn:
        ids = dict(conn.execute(select(vendor_table.c.name, vendor_table.c.id)).all())
    scoped = _person(collector, "sam", "reviewer", (ids[ACME],))
    lead = _person(collector, "lee", "vendor_lead", (ids[ACME],))
    return Fleet(acme, globex, ids[ACME], ids[GLOBEX], scoped, lead)


def _get(client: Any, person: Person, url: str) -> Any:
    return client.get(url, headers=person.headers)


def test_agent_lists_and_details_hold_only_the_vendors_in_scope(client, fleet, reviewer):
    for person in (fleet.scoped, fleet.lead):
        listed = _get(client, person, "/api/v1/agents").json()["items"]
        assert [(a["hostname"], a["vendor"]) for a in listed] == [("ws-acme", ACME)], person.name
        assert listed[0]["ip_addresses"] and listed[0]["ip_addresses"][0]["address"] == "127.0.0.1", "their own agents' IP records are shown"
        assert _get(client, person, f"/api/v1/agents?vendor={GLOBEX}").json()["items"] == []
        assert _get(client, person, f"/api/v1/agents/{fleet.globex.id}").status_code == 404, "another vendor's agent is not found, not forbidden"
        assert _get(client, person, f"/api/v1/agents/{fleet.acme.id}").json()["hostname"] == "ws-acme"
        assert [v["name"] for v in _get(client, person, "/api/v1/vendors").json()["items"]] == [ACME]
    assert {a["hostname"] for a in _get(client, reviewer, "/api/v1/agents").json()["items"]} == {"ws-acme", "ws-globex"}
    assert _get(client, reviewer, f"/api/v1/agents/{fleet.globex.id}").json()["ip_addresses"]
    assert [v["name"] for v in _get(client, reviewer, "/api/v1/vendors").json()["items"]] == [ACME, GLOBEX]


def test_device_and_egress_policies_of_other_vendors_are_not_found(client, fleet, reviewer):
    for person in (fleet.scoped, fleet.lead):
        assert _get(client, person, f"/api/v1/vendors/{GLOBEX}/device-policy").status_code == 404
        assert _get(client, person, f"/api/v1/vendors/{GLOBEX}/egress-policy").status_code == 404
        own = _get(client, person, f"/api/v1/vendors/{ACME}/device-policy").json()
        assert [e["reason"] for e in own["exceptions"]] == ["acme migration"]
        assert _get(client, person, f"/api/v1/vendors/{ACME}/egress-policy").json()["allowed_remotes"] == ["git.acme.example/**"]
        assert _get(client, person, "/api/v1/quarantine").status_code == 403, "quarantine stays admin-only"
    assert [e["reason"] for e in _get(client, reviewer, f"/api/v1/vendors/{GLOBEX}/device-policy").json()["exceptions"]] == ["globex secret reason"]
    assert _get(client, reviewer, f"/api/v1/vendors/{GLOBEX}/egress-policy").json()["allowed_remotes"] == ["git.globex.example/**"]


def test_quarantine_lists_follow_the_scope(collector, fleet):
    with collector.db.read() as conn:
        mine = quarantine.list_items(conn, scope=Scope.vendors([fleet.acme_id]))
        everything = quarantine.list_items(conn, scope=Scope.everything())
        asked_for_other = quarantine.list_items(conn, scope=Scope.vendors([fleet.acme_id]), vendor=GLOBEX)
        nothing = quarantine.list_items(conn, scope=Scope.vendors([]))
    assert [i["vendor"] for i in mine] == [ACME] and asked_for_other == [] and nothing == []
    assert sorted(i["vendor"] for i in everything) == [ACME, GLOBEX]


@pytest.mark.parametrize("folded", [False, True])
def test_vendor_overview_figures_are_those_of_the_vendors_in_scope(collector, clock, fleet, folded):
    if folded:
        with collector.db.write() as conn:
            assert stats.fold(conn, now=clock() + timedelta(minutes=10)) > 0
    with collector.db.read() as conn:
        scoped = stats.vendor_overview(conn, now=clock(), scope=Scope.vendors([fleet.acme_id]))
        lead = stats.vendor_overview(conn, now=clock(), scope=Scope.vendors([fleet.acme_id], pseudonymize=True), pseudonyms=collector.pseudonyms)
        unnamed = stats.vendor_overview(conn, now=clock(), scope=Scope.vendors([fleet.acme_id], pseudonymize=True))
        everything = stats.vendor_overview(conn, now=clock(), scope=Scope.everything())
    # acme: 2 events plus its quarantine event; globex: 3 plus its own
    assert [(s.name, s.total) for s in everything] == [(ACME, 3), (GLOBEX, 4)]
    assert [(s.name, s.total, s.agents) for s in scoped] == [(ACME, 3, 1)]
    assert scoped[0].top_rules[0] == ("acme_rule", 2) and scoped[0].top_devices == [("ACME0001", 3)]
    assert scoped[0].top_users == [("jdoe", 3)]
    (shown,) = lead
    assert shown.total == 3 and all(name.startswith("person-") for name, _ in shown.top_users)
    assert sorted(n for _, n in shown.top_users) == sorted(n for _, n in scoped[0].top_users), "the same counts under pseudonyms"
    assert unnamed[0].top_users == [], "without the pseudonym key a lead's top users are left out, never shown by name"


def test_ui_fleet_pages_show_nothing_of_another_vendor(client, fleet, reviewer, admin):
    for person in (fleet.scoped, fleet.lead):
        _log_in(client, person)
        agents_page = client.get("/ui/agents").text
        assert "ws-acme" in agents_page and "ws-globex" not in agents_page and GLOBEX not in agents_page
        assert "ws-globex" not in client.get(f"/ui/agents?vendor={GLOBEX}").text
        overview = client.get("/ui/vendors")
        assert overview.status_code == 200
        page = overview.text
        assert ACME in page and "acme_rule" in page and "ACME0001" in page
        assert GLOBEX not in page and "globex_rule" not in page and "GLOBEX01" not in page and "gsmith" not in page
        assert "3 events over 30 days" in page, "the chart's figures are acme's alone"
        for admin_page in ("/ui/devices", f"/ui/devices?vendor={GLOBEX}", "/ui/egress", f"/ui/egress?vendor={GLOBEX}", f"/ui/agents/{fleet.globex.id}/revoke"):
            assert client.get(admin_page).status_code == 403, admin_page
    _log_in(client, fleet.scoped)
    assert "jdoe" in client.get("/ui/vendors").text, "a scoped reviewer sees names"
    _log_in(client, fleet.lead)
    led = client.get("/ui/vendors").text
    assert "jdoe" not in led and "person-" in led, "a lead sees top users as pseudonyms"
    _log_in(client, reviewer)
    both = client.get("/ui/vendors").text
    assert ACME in both and GLOBEX in both and "gsmith" in both and "4 events over 30 days" in both
    assert "ws-globex" in client.get("/ui/agents").text
    _log_in(client, admin)
    assert "globex secret reason" in client.get(f"/ui/devices?vendor={GLOBEX}").text
    assert "git.globex.example/**" in client.get(f"/ui/egress?vendor={GLOBEX}").text
