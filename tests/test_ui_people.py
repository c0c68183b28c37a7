"""People pages through the test client on SQLite and PostgreSQL: people by risk, timelines, the
watchlist and its badges, saved views on the event list, and who may open them."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from server.db.tables import audit_log, vendors
from server.store import users
from server.ui.session import csrf_token
from tests.collector_env import Person, event_record, send_events


def _log_in(client: Any, person: Person) -> str:
    client.cookies.clear()
    form = client.get("/ui/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text).group(1)
    answer = client.post("/ui/login", data={"username": person.name, "password": person.password, "nonce": nonce, "next": "/ui/events"}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return csrf_token(client.cookies["dlp_session"])


def _page(client: Any, url: str, status: int = 200) -> str:
    answer = client.get(url)
    assert answer.status_code == status, answer.text[:2000]
    return answer.text


def test_people_page_and_timeline_show_risk_events_addresses(client, collector, clock, enroll, reviewer):
    agent = enroll(hostname="ws-3")
    when = (clock.now - timedelta(hours=12)).isoformat().replace("+00:00", "Z")  # 21:00 UTC: off-hours
    risky = event_record(user="jdoe", occurred_at=when)
    calm = event_record(user="amy", severity="low", channel="clipboard", type="clipboard.copy", device=None)
    send_events(client, agent, risky, calm)
    _log_in(client, reviewer)
    listing = _page(client, "/ui/people")
    assert 'href="/ui/people"' in listing and listing.index(">jdoe<") < listing.index(">amy<")
    by_name = _page(client, "/ui/people?sort=name")
    assert by_name.index(">amy<") < by_name.index(">jdoe<")
    line = _page(client, "/ui/timeline?user=jdoe")
    assert f'href="/ui/events/{risky["id"]}"' in line and calm["id"] not in line
    assert "Events outside working hours" in line and "127.0.0.1" in line and "<svg" in line
    assert 'href="/ui/timeline?device=4C530001"' in line and 'href="/ui/timeline?host=ws-3"' in line
    assert risky["id"] in _page(client, "/ui/timeline?device=4C530001")
    host = _page(client, "/ui/timeline?host=ws-3")
    assert risky["id"] in host and calm["id"] in host
    assert "exactly one of user, device or host" in html.unescape(_page(client, "/ui/timeline", 422))
    event = _page(client, f"/ui/events/{risky['id']}")
    assert 'href="/ui/timeline?user=jdoe"' in event and 'href="/ui/timeline?host=ws-3"' in event and 'href="/ui/timeline?device=4C530001"' in event


def test_watchlist_page_adds_badges_and_removes(client, collector, enroll, reviewer):
    agent = enroll()
    record = event_record(user="leaver")
    send_events(client, agent, record)
    csrf = _log_in(client, reviewer)
    assert "watched</" not in _page(client, "/ui/events")
    refused = client.post("/ui/watchlist", data={"user": "leaver", "csrf": "wrong"})
    assert refused.status_code == 403
    added = client.post("/ui/watchlist", data={"user": "leaver", "vendor": "acme-bpo", "reason": "notice period", "expires_at": "2026-12-31T00:00", "csrf": csrf}, follow_redirects=False)
    assert added.status_code == 303 and added.headers["location"] == "/ui/watchlist?notice=watched"
    page = _page(client, "/ui/watchlist?notice=watched")
    assert "Added to the watchlist." in page and "notice period" in page and "acme-bpo" in page
    assert 'class="flag watched"' in _page(client, "/ui/events")
    assert 'class="flag watched"' in _page(client, f"/ui/events/{record['id']}")
    assert 'class="flag watched"' in _page(client, "/ui/timeline?user=leaver") and 'class="flag watched"' in _page(client, "/ui/people")
    entry_id = re.search(r'action="/ui/watchlist/(\d+)/remove"', page).group(1)
    removed = client.post(f"/ui/watchlist/{entry_id}/remove", data={"csrf": csrf}, follow_redirects=False)
    assert removed.status_code == 303
    assert 'class="flag watched"' not in _page(client, "/ui/events")
    with collector.db.read() as conn:
        actions = conn.execute(select(audit_log.c.action).where(audit_log.c.action.like("watchlist.%"))).scalars().all()
    assert actions == ["watchlist.add", "watchlist.remove"]


def test_saved_views_from_the_event_list(client, collector, reviewer, admin):
    csrf = _log_in(client, reviewer)
    listing = _page(client, "/ui/events?severity=critical&channel=usb")
    assert 'action="/ui/views"' in listing and 'name="query" value="channel=usb&amp;severity=critical"' in listing
    saved = client.post("/ui/views", data={"name": "USB criticals", "query": "channel=usb&severity=critical", "shared": "on", "csrf": csrf}, follow_redirects=False)
    assert saved.status_code == 303 and saved.headers["location"] == "/ui/events?channel=usb&severity=critical"
    mine = client.post("/ui/views", data={"name": "Mine only", "query": "channel=egress", "csrf": csrf}, follow_redirects=False)
    assert mine.status_code == 303
    bad = client.post("/ui/views", data={"name": "Bad", "query": "severity=loud", "csrf": csrf})
    assert bad.status_code == 422
    menu = _page(client, "/ui/events")
    assert 'href="/ui/events?channel=usb&amp;severity=critical">USB criticals</a>' in menu and ">Mine only</a>" in menu
    _log_in(client, admin)
    theirs = _page(client, "/ui/events")
    assert ">USB criticals</a>" in theirs and "shared by rita" in theirs and "Mine only" not in theirs
    view_id = re.search(r'action="/ui/views/(\d+)/delete"', menu).group(1)
    assert 'action="/ui/views/' not in theirs  # only the owner may delete
    csrf = _log_in(client, reviewer)
    assert client.post(f"/ui/views/{view_id}/delete", data={"csrf": csrf}, follow_redirects=False).status_code == 303


def test_vendor_leads_get_no_people_pages_and_scoped_reviewers_their_vendors(client, collector, enroll):
    ours, theirs = enroll(vendor="acme-bpo", hostname="ws-a"), enroll(vendor="other-bpo", hostname="ws-b")
    send_events(client, ours, event_record(user="ann"))
    hidden = event_record(user="bob")
    send_events(client, theirs, hidden)
    with collector.db.write() as conn:
        acme = conn.execute(select(vendors.c.id).where(vendors.c.name == "acme-bpo")).scalar_one()
        lead_user, lead_password, lead_token = users.create(conn, name="lee", role="vendor_lead", now=collector.clock(), vendor_ids=(acme,))
        scoped_user, scoped_password, scoped_token = users.create(conn, name="sam", role="reviewer", now=collector.clock(), vendor_ids=(acme,))
    _log_in(client, Person("sam", scoped_password, scoped_token))
    listing = _page(client, "/ui/people")
    assert ">ann<" in listing and ">bob<" not in listing
    assert hidden["id"] not in _page(client, "/ui/timeline?host=ws-b")
    _log_in(client, Person("lee", lead_password, lead_token))
    assert 'href="/ui/people"' not in _page(client, "/ui/events")
    assert 'action="/ui/views"' not in _page(client, "/ui/events")
    for url in ("/ui/people", "/ui/timeline?user=ann", "/ui/watchlist"):
        assert client.get(url).status_code == 403, url
