"""People API on SQLite and PostgreSQL: timelines, counts per day, addresses, case links, watchlists
(with their alert threshold), risk scores and their factors, saved views, and who may see them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from server.db.tables import alert_outbox, audit_log, case_events, cases, event_counts, events, stats_progress, vendors
from server.maintenance import roll_up_stats
from server.store import stats, users, views
from tests.collector_env import Person, add_user, event_record, send_events


@pytest.fixture
def settings_toml() -> str:
    # A target nobody listens on: ingest queues alerts in the outbox, where the test reads them.
    return '[alerts]\nmin_severity = "high"\nwatchlist_min_severity = "medium"\nwebhook_url = "http://127.0.0.1:9/hook"\n'


def _at(clock: Any, **delta: float) -> str:
    return (clock.now + timedelta(**delta)).astimezone(UTC).isoformat().replace("+00:00", "Z")


def _scoped(collector: Any, name: str, role: str, vendor_names: list[str]) -> Person:
    with collector.db.write() as conn:
        ids = tuple(conn.execute(select(vendors.c.id).where(vendors.c.name.in_(vendor_names))).scalars())
        user, password, token = users.create(conn, name=name, role=role, now=collector.clock(), vendor_ids=ids)
    return Person(user.name, password, token)


def _get(client: Any, person: Person, url: str, status: int = 200) -> Any:
    answer = client.get(url, headers=person.headers)
    assert answer.status_code == status, answer.text
    return answer.json()


def _fold(collector: Any, clock: Any) -> None:
    clock.advance(minutes=10)
    roll_up_stats(collector)


def test_timeline_lists_a_users_events_in_order_with_counts_addresses_and_cases(client, collector, clock, enroll, reviewer):
    agent = enroll(hostname="ws-7")
    first = event_record(occurred_at=_at(clock, days=-2), user="jdoe")
    second = event_record(occurred_at=_at(clock, days=-1), user="jdoe", channel="clipboard", type="clipboard.copy", device=None)
    third = event_record(occurred_at=_at(clock, minutes=-5), user="jdoe", severity="low")
    other = event_record(user="mallory", device={"serial": "OTHER-1"})
    for record in (first, second, third, other):
        send_events(client, agent, record)
    line = _get(client, reviewer, "/api/v1/timeline?user=jdoe&limit=2")
    assert [item["id"] for item in line["items"]] == [third["id"], second["id"]]
    rest = _get(client, reviewer, f"/api/v1/timeline?user=jdoe&limit=2&cursor={line['next']}")
    assert [item["id"] for item in rest["items"]] == [first["id"]] and rest["next"] is None
    today = clock.now.date()

    def counts(body: dict[str, Any]) -> dict[str, int]:
        return {day["day"]: day["events"] for day in body["per_day"] if day["events"]}

    expected = {(today - timedelta(days=2)).isoformat(): 1, (today - timedelta(days=1)).isoformat(): 1, today.isoformat(): 1}
    assert counts(line) == expected  # not folded yet: read from the events
    assert line["addresses"] == [{"address": "127.0.0.1", "country": None, "events": 3, "first_seen": "2026-11-22T09:00:00.000Z", "last_seen": "2026-11-24T08:55:00.000Z"}]
    _fold(collector, clock)
    assert counts(_get(client, reviewer, "/api/v1/timeline?user=jdoe")) == expected  # the same from the rollups
    device = _get(client, reviewer, "/api/v1/timeline?device=4C530001")
    assert [item["id"] for item in device["items"]] == [third["id"], first["id"]]
    host = _get(client, reviewer, "/api/v1/timeline?host=ws-7")
    assert len(host["items"]) == 4 and sum(day["events"] for day in host["per_day"]) == 4
    assert _get(client, reviewer, "/api/v1/timeline?user=jdoe&host=ws-7", 422)
    with collector.db.write() as conn:
        seq = conn.execute(select(events.c.seq).where(events.c.id == second["id"])).scalar_one()
        now = collector.clock()
        case_id = conn.execute(cases.insert().values(title="jdoe copies", status="open", created_by="rita", created_at=now, updated_at=now, event_count=1).returning(cases.c.id)).scalar_one()
        conn.execute(case_events.insert().values(case_id=case_id, event_seq=seq, added_by="rita", added_at=now))
    linked = _get(client, reviewer, "/api/v1/timeline?user=jdoe")["cases"]
    assert linked == [{"id": case_id, "title": "jdoe copies", "status": "open", "events": 1}]
    assert _get(client, reviewer, "/api/v1/timeline?user=mallory")["cases"] == []


def test_watchlist_add_list_expire_remove_audited_and_badged(client, collector, clock, enroll, reviewer):
    agent = enroll()
    record = event_record(user="jdoe")
    send_events(client, agent, record)
    body = {"user": "jdoe", "reason": "contract ends in December", "expires_at": _at(clock, days=7)}
    added = client.post("/api/v1/watchlist", json=body, headers=reviewer.headers)
    assert added.status_code == 201, added.text
    entry = added.json()
    assert entry["user"] == "jdoe" and entry["vendor"] is None and entry["active"] and entry["added_by"] == "rita"
    assert [item["id"] for item in _get(client, reviewer, "/api/v1/watchlist")["items"]] == [entry["id"]]
    assert _get(client, reviewer, "/api/v1/timeline?user=jdoe")["items"][0]["watched"] is True
    person = _get(client, reviewer, "/api/v1/people/jdoe")
    assert person["watchlist"][0]["reason"] == "contract ends in December" and person["risk"]["watched"] is True
    stale = {"user": "jdoe", "expires_at": _at(clock, days=-1)}
    assert client.post("/api/v1/watchlist", json=stale, headers=reviewer.headers).status_code == 422
    assert client.post("/api/v1/watchlist", json={"user": "jdoe", "expires_at": "2026-12-01T00:00:00"}, headers=reviewer.headers).status_code == 422
    clock.advance(days=8)
    assert _get(client, reviewer, "/api/v1/watchlist")["items"] == []
    expired = _get(client, reviewer, "/api/v1/watchlist?include_expired=true")["items"]
    assert [(item["id"], item["active"]) for item in expired] == [(entry["id"], False)]
    assert _get(client, reviewer, "/api/v1/timeline?user=jdoe")["items"][0]["watched"] is False
    assert client.delete(f"/api/v1/watchlist/{entry['id']}", headers=reviewer.headers).status_code == 204
    assert client.delete(f"/api/v1/watchlist/{entry['id']}", headers=reviewer.headers).status_code == 404
    with collector.db.read() as conn:
        trail = conn.execute(select(audit_log.c.action, audit_log.c.actor, audit_log.c.target).where(audit_log.c.action.like("watchlist.%")).order_by(audit_log.c.seq)).all()
    assert [tuple(row) for row in trail] == [("watchlist.add", "rita", f"watchlist:{entry['id']}"), ("watchlist.remove", "rita", f"watchlist:{entry['id']}")]


def test_watchlisted_users_alert_at_the_lower_threshold(client, collector, enroll, reviewer):
    agent = enroll()
    added = client.post("/api/v1/watchlist", json={"user": "leaver", "vendor": "acme-bpo"}, headers=reviewer.headers)
    assert added.status_code == 201, added.text
    sent = {
        "watched_medium": event_record(user="leaver", severity="medium"),
        "watched_low": event_record(user="leaver", severity="low"),
        "other_medium": event_record(user="stayer", severity="medium"),
        "other_high": event_record(user="stayer", severity="high"),
    }
    send_events(client, agent, *sent.values())
    with collector.db.read() as conn:
        alerted = set(conn.execute(select(events.c.id).join(alert_outbox, alert_outbox.c.event_seq == events.c.seq)).scalars())
    assert alerted == {sent["watched_medium"]["id"], sent["other_high"]["id"]}
    other = enroll(vendor="other-bpo", hostname="ws-9")
    elsewhere = event_record(user="leaver", severity="medium")
    send_events(client, other, elsewhere)  # the entry names acme-bpo's leaver only
    with collector.db.read() as conn:
        assert conn.execute(select(alert_outbox).join(events, alert_outbox.c.event_seq == events.c.seq).where(events.c.id == elsewhere["id"])).first() is None


def _risk(client: Any, person: Person) -> dict[str, dict[str, Any]]:
    return {item["user"]: item for item in _get(client, person, "/api/v1/people")["items"]}


def test_risk_factors_and_order(client, collector, clock, enroll, reviewer):
    agent = enroll()
    # 2026-11-24 is a Tuesday; 09:00 UTC is working time, 23:00 and Saturday are not.
    day = datetime(2026, 11, 24, tzinfo=UTC)

    def at(moment: datetime) -> str:
        return moment.isoformat().replace("+00:00", "Z")

    quiet = [event_record(user="quiet", severity="low", channel="clipboard", type="clipboard.copy", device=None, occurred_at=at(day + timedelta(hours=10)))]
    night = [event_record(user="night", severity="high", occurred_at=at(day + timedelta(hours=23, minutes=n))) for n in range(3)]
    weekend = [event_record(user="night", severity="medium", channel="clipboard", type="clipboard.copy", device=None, occurred_at=at(day - timedelta(days=3, hours=-12)))]
    send_events(client, agent, *quiet, *night, *weekend)
    scores = _risk(client, reviewer)
    assert list(scores) == ["night", "quiet"]
    factors = {factor["name"]: factor for factor in scores["night"]["factors"]}
    assert factors["off_hours"]["figure"] == 4 and factors["off_hours"]["contribution"] == pytest.approx(15 * 4 / 10)
    assert factors["severity"]["figure"] == 3 * 4 + 2 and factors["channel"]["figure"] == 3 and factors["volume"]["figure"] == 4
    assert factors["unfamiliar_ips"]["figure"] == 0  # no history before the window: nothing to be unfamiliar with
    assert scores["night"]["score"] == pytest.approx(sum(factor["contribution"] for factor in factors.values()), abs=0.05)
    quiet_factors = {factor["name"]: factor["figure"] for factor in scores["quiet"]["factors"]}
    assert quiet_factors == {"severity": 1, "channel": 0, "volume": 1, "unfamiliar_ips": 0, "off_hours": 0}
    # quiet's earlier history from one address, then a new address inside the window: unfamiliar.
    old = event_record(user="quiet", severity="low", channel="clipboard", type="clipboard.copy", device=None, occurred_at=at(day - timedelta(days=40)))
    send_events(client, agent, old)
    new_address = event_record(user="quiet", severity="low", channel="clipboard", type="clipboard.copy", device=None, occurred_at=at(day + timedelta(hours=11)))
    answer = client.post("/api/v1/events", json={"events": [new_address]}, headers=agent.headers)
    assert answer.status_code == 200
    with collector.db.write() as conn:  # the address the collector saw, as if the agent had moved
        conn.execute(events.update().where(events.c.id == new_address["id"]).values(source_ip="203.0.113.9"))
    _fold(collector, clock)
    quiet_now = _risk(client, reviewer)["quiet"]
    assert quiet_now["unfamiliar_ips"] == ["203.0.113.9"]
    assert {factor["name"]: factor["figure"] for factor in quiet_now["factors"]}["unfamiliar_ips"] == 1
    by_name = [item["user"] for item in _get(client, reviewer, "/api/v1/people?sort=name")["items"]]
    assert by_name == ["night", "quiet"]
    assert _get(client, reviewer, "/api/v1/people/night")["risk"]["score"] == scores["night"]["score"]
    assert _get(client, reviewer, "/api/v1/people/nobody")["risk"] is None


def test_saved_views_private_and_shared(client, collector, reviewer, admin):
    made = client.post("/api/v1/views", json={"name": "USB criticals", "query": "severity=critical&channel=usb"}, headers=reviewer.headers)
    assert made.status_code == 201, made.text
    view = made.json()
    assert view["query"] == "channel=usb&severity=critical" and view["url"] == "/ui/events?channel=usb&severity=critical" and view["mine"]
    shared = client.post("/api/v1/views", json={"name": "Egress", "query": "channel=egress", "shared": True}, headers=reviewer.headers).json()
    assert client.post("/api/v1/views", json={"name": "Egress", "query": ""}, headers=reviewer.headers).status_code == 409
    assert client.post("/api/v1/views", json={"name": "Bad", "query": "channel=fax"}, headers=reviewer.headers).status_code == 422
    assert [v["name"] for v in _get(client, reviewer, "/api/v1/views")["items"]] == ["Egress", "USB criticals"]
    theirs = _get(client, admin, "/api/v1/views")["items"]
    assert [(v["name"], v["mine"], v["owner"]) for v in theirs] == [("Egress", False, "rita")]
    other = add_user(collector, "otto", "reviewer")
    assert client.delete(f"/api/v1/views/{view['id']}", headers=other.headers).status_code == 404
    assert client.delete(f"/api/v1/views/{shared['id']}", headers=other.headers).status_code == 404
    assert client.delete(f"/api/v1/views/{view['id']}", headers=reviewer.headers).status_code == 204
    with collector.db.read() as conn:
        actions = conn.execute(select(audit_log.c.action).where(audit_log.c.action.like("view.%")).order_by(audit_log.c.seq)).scalars().all()
    assert actions == ["view.create", "view.create", "view.delete"]


def test_scoped_reviewer_sees_only_its_vendors_and_vendor_leads_none(client, collector, clock, enroll, reviewer):
    ours, theirs = enroll(vendor="acme-bpo", hostname="ws-a"), enroll(vendor="other-bpo", hostname="ws-b")
    mine, hidden = event_record(user="shared-name"), event_record(user="shared-name")
    send_events(client, ours, mine)
    send_events(client, theirs, hidden, event_record(user="only-other"))
    scoped = _scoped(collector, "sam", "reviewer", ["acme-bpo"])
    lead = _scoped(collector, "lee", "vendor_lead", ["acme-bpo"])
    line = _get(client, scoped, "/api/v1/timeline?user=shared-name")
    assert [item["id"] for item in line["items"]] == [mine["id"]] and sum(d["events"] for d in line["per_day"]) == 1
    assert _get(client, scoped, "/api/v1/timeline?host=ws-b")["items"] == []
    assert set(_risk(client, scoped)) == {"shared-name"} and _risk(client, scoped)["shared-name"]["events"] == 1
    assert set(_risk(client, reviewer)) == {"shared-name", "only-other"}
    _fold(collector, clock)
    assert _risk(client, scoped)["shared-name"]["events"] == 1
    assert sum(d["events"] for d in _get(client, scoped, "/api/v1/timeline?user=shared-name")["per_day"]) == 1
    assert client.post("/api/v1/watchlist", json={"user": "x"}, headers=scoped.headers).status_code == 422  # any vendor: beyond its scope
    assert client.post("/api/v1/watchlist", json={"user": "x", "vendor": "other-bpo"}, headers=scoped.headers).status_code == 404
    assert client.post("/api/v1/watchlist", json={"user": "x", "vendor": "acme-bpo"}, headers=scoped.headers).status_code == 201
    everywhere = client.post("/api/v1/watchlist", json={"user": "y"}, headers=reviewer.headers).json()
    assert [item["user"] for item in _get(client, scoped, "/api/v1/watchlist")["items"]] == ["x"]
    assert client.delete(f"/api/v1/watchlist/{everywhere['id']}", headers=scoped.headers).status_code == 404
    for url in ("/api/v1/people", "/api/v1/people/shared-name", "/api/v1/timeline?user=shared-name", "/api/v1/watchlist", "/api/v1/views"):
        assert client.get(url, headers=lead.headers).status_code == 403, url
    assert client.post("/api/v1/watchlist", json={"user": "x", "vendor": "acme-bpo"}, headers=lead.headers).status_code == 403
    assert client.post("/api/v1/views", json={"name": "n", "query": ""}, headers=lead.headers).status_code == 403


def test_working_hours_must_be_in_order(tmp_path):
    from server.settings import SettingsError, load_settings

    (tmp_path / "server.toml").write_text("[people]\nwork_start_hour = 20\nwork_end_hour = 8\n")
    with pytest.raises(SettingsError, match="work_start_hour must be before work_end_hour"):
        load_settings(tmp_path, environ={})
    (tmp_path / "server.toml").write_text("[people]\nrisk_days = 7\nwork_start_hour = 9\nwork_end_hour = 17\n")
    assert load_settings(tmp_path, environ={}).people.work_end_hour == 17


def test_a_collector_upgraded_with_folded_events_folds_them_for_people_too(client, collector, clock, enroll, reviewer):
    agent = enroll(hostname="ws-9")
    for n in range(3):
        send_events(client, agent, event_record(occurred_at=_at(clock, hours=-n), user="jdoe"))
    _fold(collector, clock)
    with collector.db.write() as conn:  # as before issue 19: the overview's kinds folded, no person's kinds, no cursor of theirs
        conn.execute(event_counts.delete().where(event_counts.c.kind.not_in(["severity", "rule", "user", "device"])))
        conn.execute(stats_progress.delete().where(stats_progress.c.id == stats.PEOPLE_PROGRESS))
        before = dict(conn.execute(select(event_counts.c.kind, func.sum(event_counts.c.count)).group_by(event_counts.c.kind)).tuples().all())
    assert before.get("host") is None
    _fold(collector, clock)
    with collector.db.read() as conn:
        after = dict(conn.execute(select(event_counts.c.kind, func.sum(event_counts.c.count)).group_by(event_counts.c.kind)).tuples().all())
        assert stats.folded_upto(conn, stats.PEOPLE_PROGRESS) == stats.folded_upto(conn)
    assert after["host"] == 3
    assert {kind: after[kind] for kind in before} == before  # the overview's counts are not folded twice
    assert sum(day["events"] for day in _get(client, reviewer, "/api/v1/timeline?host=ws-9")["per_day"]) == 3


def test_a_scoped_reviewer_sees_only_shared_views_of_owners_within_its_scope(client, collector, enroll, reviewer, admin):
    enroll(vendor="acme-bpo", hostname="ws-a"), enroll(vendor="globex-it", hostname="ws-g")
    acme = _scoped(collector, "sam", "reviewer", ["acme-bpo"])
    globex = _scoped(collector, "gwen", "reviewer", ["globex-it"])
    both = _scoped(collector, "bea", "reviewer", ["acme-bpo", "globex-it"])
    made = {}
    for owner, name, query in ((admin, "globex eve", "vendor=globex-it&user=eve"), (globex, "globex usb", "channel=usb"), (acme, "acme usb", "channel=usb"), (both, "both", "")):
        answer = client.post("/api/v1/views", json={"name": name, "query": query, "shared": True}, headers=owner.headers)
        assert answer.status_code == 201, answer.text
        made[name] = answer.json()["id"]
    seen = {person.name: sorted(v["name"] for v in _get(client, person, "/api/v1/views")["items"]) for person in (acme, globex, both, reviewer)}
    assert seen == {
        "sam": ["acme usb"], "gwen": ["globex usb"], "bea": ["acme usb", "both", "globex usb"],
        "rita": ["acme usb", "both", "globex eve", "globex usb"],
    }  # fmt: skip
    for name in ("globex eve", "globex usb", "both"):
        assert client.delete(f"/api/v1/views/{made[name]}", headers=acme.headers).status_code == 404, name
    with collector.db.read() as conn:
        viewer = users.get(conn, name="sam")
        with pytest.raises(Exception, match="no view"):
            views.get(conn, view_id=made["globex eve"], viewer=viewer)
        assert views.get(conn, view_id=made["acme usb"], viewer=viewer)["mine"]


def test_a_timeline_leaves_out_the_collectors_access_events(client, collector, enroll, reviewer):
    """A reviewer or admin named like a member of staff: their unusual-login events are no part of that person's timeline."""
    from server.store import ingest

    staff = event_record(user="jdoe")
    send_events(client, enroll(hostname="ws-7"), staff)
    with collector.db.write() as conn:
        ingest.raise_access_event(
            conn, kind="access.unusual_login", details={"user": "jdoe", "new": ["country"]}, now=collector.clock(), severity="medium", address="203.0.113.9", country="BR"
        )
    line = _get(client, reviewer, "/api/v1/timeline?user=jdoe")
    assert [item["id"] for item in line["items"]] == [staff["id"]]
    assert sum(day["events"] for day in line["per_day"]) == 1
    assert [a["address"] for a in line["addresses"]] == ["127.0.0.1"]
