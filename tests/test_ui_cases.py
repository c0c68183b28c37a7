"""Case pages, server side, on SQLite and PostgreSQL: from the event list to a closed, exported case; scope and roles."""

from __future__ import annotations

import io
import json
import re
import zipfile
from typing import Any

from server.store import audit
from tests.collector_env import event_record, send_events
from tests.test_cases import scoped
from tests.test_ui_views import _ids, _log_in


def _case_id(answer: Any) -> int:
    assert answer.status_code == 303, answer.text
    found = re.fullmatch(r"/ui/cases/(\d+)\?notice=\w+", answer.headers["location"])
    assert found, answer.headers["location"]
    return int(found.group(1))


def test_a_case_from_the_list_assigned_commented_closed_and_exported(client, collector, clock, enroll, reviewer, admin):
    agent = enroll(vendor="acme-bpo")
    send_events(client, agent, event_record(severity="high", occurred_at="2026-11-24T08:00:00Z"), event_record(severity="low", occurred_at="2026-11-24T07:00:00Z"))
    csrf = _log_in(client, reviewer)
    listing = client.get("/ui/events").text
    assert 'id="new-case"' in listing and 'id="add-to-case"' not in listing  # no open case to add to yet
    ids = _ids(listing)
    refused = client.post("/ui/cases/new", data={"csrf": csrf, "ids": ids, "title": ""}, follow_redirects=False)
    assert refused.status_code == 422 and "title" in refused.text
    assert client.post("/ui/cases/new", data={"ids": ids, "title": "x"}, follow_redirects=False).status_code == 403  # no CSRF token
    case_id = _case_id(client.post("/ui/cases/new", data={"csrf": csrf, "ids": ids[:1], "title": "Stick <b>copies</b>"}, follow_redirects=False))
    page = client.get(f"/ui/cases/{case_id}?notice=created").text
    assert "Case opened." in page and "Stick &lt;b&gt;copies&lt;/b&gt;" in page and page.count('class="case-event"') == 1
    assert _case_id(client.post("/ui/cases/add", data={"csrf": csrf, "ids": ids, "case": str(case_id)}, follow_redirects=False)) == case_id
    page = client.get(f"/ui/cases/{case_id}").text
    timeline = re.findall(r'class="case-event" data-event-id="([^"]+)"', page)
    assert timeline == [ids[0], ids[1]]  # the list is newest received first (the low event, 07:00); the timeline oldest occurred first
    assert "SanDisk Ultra · serial 4C530001" in page and "/media/jdoe/STICK/backup.zip" in page
    assert 'id="add-to-case"' in client.get("/ui/events").text

    form = {"csrf": csrf, "title": "Stick copies", "status": "investigating", "outcome": "", "assignee": "alice", "severity": "", "due": "2026-11-24T10:00"}
    assert client.post(f"/ui/cases/{case_id}/update", data=form, follow_redirects=False).headers["location"].endswith("notice=saved")
    closing = client.post(f"/ui/cases/{case_id}/update", data={**form, "status": "closed"}, follow_redirects=False)
    assert closing.status_code == 422 and "outcome" in closing.text
    client.post(f"/ui/cases/{case_id}/comments", data={"csrf": csrf, "body": "HR informed", "internal": "1"})
    client.post(f"/ui/cases/{case_id}/comments", data={"csrf": csrf, "body": "Vendor asked"})
    clock.advance(hours=2)
    listed = client.get("/ui/cases").text
    assert 'class="case-row overdue"' in listed and "overdue-mark" in listed
    assert 'class="case-row' in client.get("/ui/cases?overdue=1").text
    client.post(f"/ui/cases/{case_id}/update", data={**form, "status": "closed", "outcome": "confirmed_leak"})
    page = client.get(f"/ui/cases/{case_id}").text
    assert "closed (confirmed leak)" in page and 'class="comment internal"' in page and "overdue-mark" not in page
    assert 'class="case-row' not in client.get("/ui/cases?overdue=1").text
    history = re.search(r'<ol id="case-history".*?</ol>', page, re.S).group(0)
    assert [a for a in re.findall(r"<strong>([a-z._]+)</strong>", history)] == [
        "case.create", "case.events_add", "case.update", "case.comment", "case.comment", "case.update"
    ]  # fmt: skip

    assert client.post(f"/ui/cases/{case_id}/export", data={}).status_code == 403
    exported = client.post(f"/ui/cases/{case_id}/export", data={"csrf": csrf})
    assert exported.status_code == 200 and exported.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(exported.content)) as archive:
        doc = json.loads(archive.read("case.json"))
    assert doc["case"]["outcome"] == "confirmed_leak" and doc["chain"]["ok"] and doc["audit"][-1]["action"] == "case.export"
    event_page = client.get(f"/ui/events/{ids[0]}").text
    assert f'href="/ui/cases/{case_id}"' in event_page and 'id="event-new-case"' in event_page
    removed = client.post(f"/ui/cases/{case_id}/events/{ids[0]}/remove", data={"csrf": csrf}, follow_redirects=False)
    assert removed.headers["location"] == f"/ui/cases/{case_id}?notice=removed"
    assert f'href="/ui/cases/{case_id}"' not in client.get(f"/ui/events/{ids[0]}").text
    with collector.db.read() as conn:
        assert audit.verify(conn).ok


def test_the_event_page_opens_a_case_of_its_event(client, enroll, reviewer):
    agent = enroll()
    record = event_record()
    send_events(client, agent, record)
    csrf = _log_in(client, reviewer)
    case_id = _case_id(client.post("/ui/cases/new", data={"csrf": csrf, "ids": record["id"], "title": "One event"}, follow_redirects=False))
    page = client.get(f"/ui/events/{record['id']}").text
    assert re.search(rf'<section class="card" id="event-cases">.*href="/ui/cases/{case_id}"', page, re.S)
    assert 'id="event-add-case"' in page


def test_vendor_leads_and_scoped_reviewers_see_only_their_part_of_a_case(client, collector, enroll, reviewer):
    acme, globex = enroll(vendor="acme-bpo", hostname="ws-a"), enroll(vendor="globex", hostname="ws-g")
    mine, theirs = event_record(user="jdoe"), event_record(user="gus", path="/home/gus/plan.xlsx", host="ws-g")
    send_events(client, acme, mine)
    send_events(client, globex, theirs)
    csrf = _log_in(client, reviewer)
    mixed = _case_id(client.post("/ui/cases/new", data={"csrf": csrf, "ids": [mine["id"], theirs["id"]], "title": "Both"}, follow_redirects=False))
    only_globex = _case_id(client.post("/ui/cases/new", data={"csrf": csrf, "ids": [theirs["id"]], "title": "Globex only"}, follow_redirects=False))
    client.post(f"/ui/cases/{mixed}/comments", data={"csrf": csrf, "body": "customer eyes only", "internal": "1"})
    page = client.get(f"/ui/cases/{mixed}").text
    assert 'reveal-form"' in page and 'name="user" value="jdoe"' in page

    lead = scoped(collector, "lee", "vendor_lead", "acme-bpo")
    lead_csrf = _log_in(client, lead)
    listed = client.get("/ui/cases").text
    assert "Both" in listed and "Globex only" not in listed and "globex" not in listed
    page = client.get(f"/ui/cases/{mixed}").text
    assert page.count('class="case-event"') == 1 and "plan.xlsx" not in page and "customer eyes only" not in page
    assert 'id="case-update"' not in page and "reveal-form" not in page and 'id="cc-internal"' not in page and "jdoe" not in page
    assert client.get(f"/ui/cases/{only_globex}").status_code == 404
    assert client.post(f"/ui/cases/{only_globex}/comments", data={"csrf": lead_csrf, "body": "hi"}).status_code == 404
    assert client.post(f"/ui/cases/{mixed}/comments", data={"csrf": lead_csrf, "body": "internal?", "internal": "1"}).status_code == 403
    answer = client.post(f"/ui/cases/{mixed}/comments", data={"csrf": lead_csrf, "body": "We checked"}, follow_redirects=False)
    assert answer.status_code == 303
    assert client.post(f"/ui/cases/{mixed}/update", data={"csrf": lead_csrf, "title": "x", "status": "closed", "outcome": "benign"}).status_code == 403
    assert client.post("/ui/cases/new", data={"csrf": lead_csrf, "ids": mine["id"], "title": "mine"}).status_code == 403
    assert 'id="new-case"' not in client.get("/ui/events").text
    assert 'id="event-new-case"' not in client.get(f"/ui/events/{mine['id']}").text

    _log_in(client, reviewer)
    client.post(f"/ui/cases/{mixed}/reveal", data={"csrf": csrf_of(client), "user": "jdoe"})
    _log_in(client, lead)
    assert "jdoe" in client.get(f"/ui/cases/{mixed}").text

    sam = scoped(collector, "sam", "reviewer", "globex")
    _log_in(client, sam)
    page = client.get(f"/ui/cases/{mixed}").text
    assert page.count('class="case-event"') == 1 and "plan.xlsx" in page
    assert "We checked" not in page and "lee" not in page  # acme's lead wrote about acme's side, to acme's readers
    assert "Globex only" in client.get("/ui/cases").text


def csrf_of(client: Any) -> str:
    from server.ui.session import csrf_token

    return csrf_token(client.cookies["dlp_session"])
