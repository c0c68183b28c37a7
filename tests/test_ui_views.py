"""Review UI pages, server side, on SQLite and PostgreSQL: sessions, CSRF, filters, paging, triage, export, roles."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select, update

from server.db.tables import audit_log, login_attempts
from server.db.tables import events as event_table
from server.store import review, stats
from server.store.cursors import Cursor
from server.store.review import EventFilter
from server.store.scope import Scope
from server.ui.session import csrf_token, safe_next
from tests.collector_env import Person, add_user, event_record

BROKEN = 'rule broken { strings: $a = "x" condition: $b }'
GOOD = 'rule quiet_word { meta: severity = "high" strings: $a = "HUMMINGBIRD-0042" condition: $a }'


def _ingest(client: Any, agent: Any, records: list[dict[str, Any]]) -> None:
    response = client.post("/api/v1/events", json={"events": records}, headers=agent.headers)
    assert response.status_code == 200, response.text


def _log_in(client: Any, person: Person, next_url: str = "/ui/events") -> str:
    """Log in through the form as a browser does; returns the CSRF token of the session."""
    client.cookies.clear()
    form = client.get("/ui/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text).group(1)
    answer = client.post("/ui/login", data={"username": person.name, "password": person.password, "nonce": nonce, "next": next_url}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return csrf_token(client.cookies["dlp_session"])


def _ids(html: str) -> list[str]:
    return re.findall(r'name="ids" value="([0-9a-f-]{36})"', html)


def _link(html: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" class="button" rel="{rel}">', html)
    return found.group(1).replace("&amp;", "&") if found else None


def _audit(collector: Any) -> list[Any]:
    with collector.db.read() as conn:
        return conn.execute(select(audit_log).order_by(audit_log.c.seq)).all()


def _cookie_header(response: Any, name: str) -> str:
    return next(value for value in response.headers.get_list("set-cookie") if value.startswith(f"{name}="))


# --- sessions and CSRF -------------------------------------------------------------------------


def test_login_sets_a_safe_session_cookie_and_logout_revokes_it(client, collector, admin):
    first = client.get("/ui/events?severity=critical", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/ui/login?next=/ui/events%3Fseverity%3Dcritical"
    form = client.get(first.headers["location"])
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text).group(1)
    assert re.search(r'name="next" value="/ui/events\?severity=critical"', form.text)
    answer = client.post("/ui/login", data={"username": admin.name, "password": admin.password, "nonce": nonce, "next": "/ui/events?severity=critical"}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/events?severity=critical"
    cookie = _cookie_header(answer, "dlp_session")
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=lax" in flags and "path=/ui" in flags and "secure" not in flags
    assert f"max-age={12 * 3600}" in flags
    token = client.cookies["dlp_session"]
    assert token.startswith("dlpu_") and cookie.startswith(f"dlp_session={token};"), "the cookie holds the session token only"
    assert client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).json()["user"] == admin.name

    page = client.get("/ui/events")
    assert page.status_code == 200 and f'value="{csrf_token(token)}"' in page.text
    assert client.post("/ui/logout", data={"csrf": "nope"}).status_code == 403
    assert client.get("/ui/events", follow_redirects=False).status_code == 200, "a refused logout leaves the session alone"
    out = client.post("/ui/logout", data={"csrf": csrf_token(token)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    assert "max-age=0" in _cookie_header(out, "dlp_session").lower()
    assert client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    client.cookies.set("dlp_session", token, path="/ui")
    assert client.get("/ui/events", follow_redirects=False).status_code == 303, "a revoked session no longer opens pages"
    actions = [(row.actor, row.action, row.address) for row in _audit(collector)]
    assert actions == [(admin.name, "user.login", "127.0.0.1"), (admin.name, "user.logout", "127.0.0.1")]


def test_cookies_are_secure_over_tls(collector, admin):
    from fastapi.testclient import TestClient

    from server.api.app import create_app

    with TestClient(create_app(collector), base_url="https://collector.test", client=("127.0.0.1", 50000)) as tls:
        form = tls.get("/ui/login")
        assert "secure" in [p.strip().lower() for p in _cookie_header(form, "dlp_login").split(";")]
        nonce = re.search(r'name="nonce" value="([^"]+)"', form.text).group(1)
        answer = tls.post("/ui/login", data={"username": admin.name, "password": admin.password, "nonce": nonce}, follow_redirects=False)
        assert "secure" in [p.strip().lower() for p in _cookie_header(answer, "dlp_session").split(";")]


def test_failed_logins_say_why_and_are_limited_and_recorded(client, collector, admin):
    form = client.get("/ui/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text).group(1)
    for _ in range(5):
        wrong = client.post("/ui/login", data={"username": admin.name, "password": "guess", "nonce": nonce})
        assert wrong.status_code == 401 and "Wrong user name or password." in wrong.text
        nonce = re.search(r'name="nonce" value="([^"]+)"', wrong.text).group(1)
    limited = client.post("/ui/login", data={"username": admin.name, "password": admin.password, "nonce": nonce})
    assert limited.status_code == 429 and "Too many failed logins" in limited.text
    assert "dlp_session" not in client.cookies
    with collector.db.read() as conn:
        attempts = conn.execute(select(login_attempts.c.user_name, login_attempts.c.address, login_attempts.c.success)).all()
    assert attempts == [(admin.name, "127.0.0.1", False)] * 5


def test_a_login_post_without_the_forms_nonce_is_refused(client, admin):
    client.get("/ui/login")
    refused = client.post("/ui/login", data={"username": admin.name, "password": admin.password, "nonce": "forged"})
    assert refused.status_code == 403 and "expired" in refused.text
    client.cookies.clear()
    assert client.post("/ui/login", data={"username": admin.name, "password": admin.password, "nonce": ""}).status_code == 403
    assert "dlp_session" not in client.cookies


@pytest.mark.parametrize(
    ("asked", "lands"),
    [
        ("/ui/agents?vendor=acme", "/ui/agents?vendor=acme"),
        ("https://evil.example/ui/events", "/ui/events"),
        ("//evil.example/ui/events", "/ui/events"),
        ("/\\evil.example", "/ui/events"),
        ("/api/v1/events", "/ui/events"),
        ("/ui/login?next=/ui/agents", "/ui/events"),
        ("javascript:alert(1)", "/ui/events"),
        ("", "/ui/events"),
    ],
)
def test_next_goes_only_to_pages_of_this_ui(asked, lands):
    assert safe_next(asked) == lands


def test_pages_redirect_to_login_without_a_session(client, enroll):
    for path in ("/ui/events", "/ui/vendors", "/ui/agents", "/ui/signatures", "/ui/audit", "/ui/events/x"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/login?next=/ui/"), path
    posted = client.post("/ui/events/triage", data={"ids": ["x"], "status": "benign"}, follow_redirects=False)
    assert posted.status_code == 303 and posted.headers["location"].startswith("/ui/login")
    assert client.get("/", follow_redirects=False).headers["location"] == "/ui/events"
    client.cookies.set("dlp_session", "dlpu_garbage_token", path="/ui")
    assert client.get("/ui/events", follow_redirects=False).status_code == 303


def test_posts_without_the_sessions_csrf_token_change_nothing(client, collector, enroll, reviewer):
    agent = enroll()
    record = event_record()
    _ingest(client, agent, [record])
    csrf = _log_in(client, reviewer)
    other = add_user(collector, "oscar", "reviewer")
    foreign = csrf_token("dlpu_" + "someone_else")
    attempts = [
        ("/ui/events/triage", {"ids": [record["id"]], "status": "benign"}),
        (f"/ui/events/{record['id']}/triage", {"status": "benign", "assignee": other.name}),
        (f"/ui/events/{record['id']}/comments", {"body": "forged"}),
        ("/ui/events/export", {"format": "csv"}),
    ]
    for path, data in attempts:
        for token in (None, "", foreign, csrf.upper()):
            body = {**data, **({"csrf": token} if token is not None else {})}
            answer = client.post(path, data=body, follow_redirects=False)
            assert answer.status_code == 403 and "expired or came from another page" in answer.text, (path, token)
    detail = client.get(f"/api/v1/events/{record['id']}", headers=reviewer.headers).json()
    assert detail["triage"] == {"status": "new", "assignee": None} and detail["comments"] == []
    assert [row.action for row in _audit(collector)] == ["user.login"]
    assert client.post("/ui/events/triage", data={"ids": [record["id"]], "status": "benign", "csrf": csrf}, follow_redirects=False).status_code == 303


# --- the event list --------------------------------------------------------------------------


def test_filters_live_in_the_url_and_select_the_events(client, enroll, reviewer):
    acme, globex = enroll(vendor="acme-bpo", hostname="a1"), enroll(vendor="globex-it", hostname="g1")
    usb = event_record()
    doc = event_record(type="file.write", channel="file", severity="low", user="mallory", device=None,
                       matches=[{"rule": "marking", "severity": "low"}], occurred_at="2026-11-20T10:00:00Z")
    clip = event_record(type="clipboard.copy", channel="clipboard", severity="high", device=None, sha256="ab" * 32,
                        matches=[{"rule": "aws_key", "severity": "high"}])
    _ingest(client, acme, [usb, doc])
    _ingest(client, globex, [clip])
    _log_in(client, reviewer)

    def shown(query: str) -> set[str]:
        page = client.get(f"/ui/events?{query}")
        assert page.status_code == 200, page.text
        return set(_ids(page.text))

    assert shown("") == {usb["id"], doc["id"], clip["id"]}
    assert shown("vendor=acme-bpo") == {usb["id"], doc["id"]}
    assert shown("vendor=acme-bpo&severity=critical") == {usb["id"]}
    assert shown("severity=high%2Ccritical") == {usb["id"], clip["id"]}
    assert shown("channel=clipboard") == {clip["id"]}
    assert shown(f"agent={globex.id}") == {clip["id"]}
    assert shown("user=mallory") == {doc["id"]}
    assert shown("rule=aws_key") == {clip["id"]}
    assert shown("since=2026-11-21T00%3A00") == {usb["id"], clip["id"]}
    assert shown("until=2026-11-21") == {doc["id"]}
    assert shown(f"sha256={'ab' * 32}") == {clip["id"]}
    assert shown("device=4C530001") == {usb["id"]}
    assert shown("status=new&channel=usb") == {usb["id"]}
    assert shown("vendor=nobody") == set()

    page = client.get("/ui/events?vendor=acme-bpo&severity=critical&sort=severity&limit=25")
    assert '<option selected>acme-bpo</option>' in page.text and '<option value="critical" selected>' in page.text
    assert '<option value="severity" selected>' in page.text and "<option selected>25</option>" in page.text
    assert 'href="/ui/events?vendor=acme-bpo&amp;user=jdoe&amp;severity=critical&amp;sort=severity&amp;limit=25"' in page.text, "links keep the view"
    bad = client.get("/ui/events?severity=apocalyptic&since=yesterday&sort=random&limit=7")
    assert bad.status_code == 422
    for problem in ("severity must be among", "since: &#39;yesterday&#39; is not a time", "sort must be one of", "page size must be one of"):
        assert problem in bad.text
    assert set(_ids(bad.text)) == {usb["id"], doc["id"], clip["id"]}, "unusable filters are left out, not fatal"
    assert "cursor" in client.get("/ui/events?cursor=bm9wZQ").text


SEVERITIES = ["low", "critical", "medium", "high", None, "high", "low", "critical", "medium", "low"]


def _severity_events(count: int) -> list[dict[str, Any]]:
    records = []
    for n in range(count):
        severity = SEVERITIES[n % len(SEVERITIES)]
        matches = [{"rule": f"rule_{n % 3}", "severity": severity}] if severity else []
        records.append(event_record(severity=severity, matches=matches, channel="file", type="file.write", device=None))
    return records


@pytest.mark.parametrize("sort", ["newest", "oldest", "severity"])
def test_every_sort_pages_forward_and_back_over_each_event_once(collector, client, enroll, sort):
    agent = enroll()
    records = _severity_events(23)
    for start in range(0, 23, 5):
        _ingest(client, agent, records[start:start + 5])
    with collector.db.read() as conn:
        everything = review.page(conn, scope=Scope.everything(), filters=EventFilter(), limit=1000, sort="oldest").items
    rank = {"low": 1, "medium": 2, "high": 3, "critical": 4, None: 0}
    expected = {
        "newest": [e["id"] for e in sorted(everything, key=lambda e: -e["seq"])],
        "oldest": [e["id"] for e in sorted(everything, key=lambda e: e["seq"])],
        "severity": [e["id"] for e in sorted(everything, key=lambda e: (-rank[e["severity"]], -e["seq"]))],
    }[sort]
    pages, cursor = [], None
    with collector.db.read() as conn:
        while True:
            found = review.page(conn, scope=Scope.everything(), filters=EventFilter(), limit=5, cursor=cursor, sort=sort)
            pages.append(found)
            if found.next_cursor is None:
                break
            cursor = found.next_cursor
        assert [e["id"] for p in pages for e in p.items] == expected
        assert [len(p.items) for p in pages] == [5, 5, 5, 5, 3] and pages[0].prev_cursor is None
        walked_back = [pages[-1]]
        while walked_back[-1].prev_cursor:
            walked_back.append(review.page(conn, scope=Scope.everything(), filters=EventFilter(), limit=5, cursor=walked_back[-1].prev_cursor, sort=sort))
        assert [[e["id"] for e in p.items] for p in reversed(walked_back)] == [[e["id"] for e in p.items] for p in pages]
        assert walked_back[-1].next_cursor == pages[0].next_cursor
        filtered = review.page(conn, scope=Scope.everything(), filters=EventFilter(severities=("low", "critical")), limit=100, sort=sort).items
        assert [e["id"] for e in filtered] == [i for i in expected if next(e for e in everything if e["id"] == i)["severity"] in ("low", "critical")]
        other = "oldest" if sort != "oldest" else "newest"
        with pytest.raises(Exception, match="another sort order"):
            review.page(conn, scope=Scope.everything(), filters=EventFilter(), limit=5, cursor=pages[0].next_cursor, sort=other)


def test_the_list_pages_through_links_that_keep_filters_and_sort(client, enroll, reviewer):
    agent = enroll()
    records = _severity_events(60)
    for start in range(0, 60, 20):
        _ingest(client, agent, records[start:start + 20])
    _log_in(client, reviewer)
    url, seen, pages = "/ui/events?severity=low%2Cmedium%2Chigh%2Ccritical&sort=severity&limit=25", [], []
    while url:
        page = client.get(url)
        assert page.status_code == 200
        pages.append(url)
        seen += _ids(page.text)
        assert "sort=severity" in url and "severity=low%2Cmedium%2Chigh%2Ccritical" in url
        url = _link(page.text, "next")
    assert len(pages) == 3 and len(seen) == len(set(seen)) == 54, "the six events without a severity are filtered out"
    severities = [client.get(f"/api/v1/events/{i}", headers=reviewer.headers).json()["severity"] for i in seen]
    assert severities == sorted(severities, key=["critical", "high", "medium", "low"].index)
    last = client.get(pages[-1])
    previous = _link(last.text, "prev")
    assert _ids(client.get(previous).text) == seen[25:50]
    assert 'class="button">First page</a>' in last.text


def test_the_api_keeps_its_cursor_format_and_refuses_ui_cursors(client, enroll, reviewer):
    agent = enroll()
    _ingest(client, agent, [event_record() for _ in range(3)])
    body = client.get("/api/v1/events", params={"limit": 2}, headers=reviewer.headers).json()
    assert Cursor.decode(body["next_cursor"]) == Cursor("newest", body["items"][-1]["seq"])
    assert body["next_cursor"] == Cursor("newest", body["items"][-1]["seq"]).encode()
    import base64

    assert base64.urlsafe_b64decode(body["next_cursor"] + "==").decode() == f"s{body['items'][-1]['seq']}"
    severity_cursor = Cursor("severity", body["items"][-1]["seq"], 4).encode()
    refused = client.get("/api/v1/events", params={"cursor": severity_cursor}, headers=reviewer.headers)
    assert refused.status_code == 422 and "cursor" in refused.json()["detail"]


# --- triage ----------------------------------------------------------------------------------


def test_bulk_triage_sets_every_selected_event_and_is_audited(client, collector, enroll, reviewer):
    agent = enroll()
    records = [event_record() for _ in range(4)]
    _ingest(client, agent, records)
    csrf = _log_in(client, reviewer)
    chosen = [r["id"] for r in records[:3]]
    back = "/ui/events?channel=usb&sort=oldest"
    answer = client.post("/ui/events/triage", data={"ids": chosen, "status": "benign", "csrf": csrf, "back": back}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == back + "&notice=bulk"
    assert "Status set on the selected events." in client.get(answer.headers["location"]).text
    statuses = {r["id"]: client.get(f"/api/v1/events/{r['id']}", headers=reviewer.headers).json()["triage"]["status"] for r in records}
    assert statuses == {**{i: "benign" for i in chosen}, records[3]["id"]: "new"}
    entry = _audit(collector)[-1]
    assert (entry.actor, entry.action, entry.target, entry.address) == (reviewer.name, "event.triage_bulk", "3 events", "127.0.0.1")
    assert json.loads(entry.details) == {"ids": chosen, "status": "benign"}
    for data in ({"status": "benign"}, {"ids": chosen, "status": "shredded"}, {"ids": ["x" * 40], "status": "benign"}):
        refused = client.post("/ui/events/triage", data={**data, "csrf": csrf})
        assert refused.status_code == 422 and "Cannot do that" in refused.text
    assert client.post("/ui/events/triage", data={"ids": ["no-such-event"], "status": "benign", "csrf": csrf}).status_code == 404
    back_elsewhere = client.post("/ui/events/triage", data={"ids": chosen, "status": "new", "csrf": csrf, "back": "https://evil.example/"}, follow_redirects=False)
    assert back_elsewhere.headers["location"] == "/ui/events?notice=bulk"


def test_event_detail_shows_the_event_and_triage_and_comments_are_audited(client, collector, enroll, reviewer):
    agent = enroll()
    record = event_record(matches=[{"rule": "private_key_pem", "namespace": "credentials", "severity": "critical", "offsets": [0, 4096], "member": "keys/id_rsa",
                                    "snippet": "-----BEGIN R** P****** K**-----"}])
    twin = event_record()
    _ingest(client, agent, [record, twin])
    csrf = _log_in(client, reviewer)
    page = client.get(f"/ui/events/{record['id']}")
    assert page.status_code == 200
    for text in ("usb.write", "/media/jdoe/STICK/backup.zip", "SanDisk", "4C530001", "exfat", "ws-1", "jdoe", "private_key_pem", "0, 4096", "keys/id_rsa",
                 "-----BEGIN R** P****** K**-----", "127.0.0.1", "acme-bpo", "1 other event with this SHA-256", "1 other event with serial 4C530001"):
        assert text in page.text, text
    assert f'href="/ui/events?sha256={record["sha256"]}"' in page.text and 'href="/ui/events?device=4C530001"' in page.text
    assert f'href="/ui/events/{twin["id"]}"' in page.text

    saved = client.post(f"/ui/events/{record['id']}/triage", data={"status": "investigating", "assignee": reviewer.name, "csrf": csrf}, follow_redirects=False)
    assert saved.status_code == 303 and saved.headers["location"] == f"/ui/events/{record['id']}?notice=triaged"
    client.post(f"/ui/events/{record['id']}/comments", data={"body": "  Asked the vendor's manager.  ", "csrf": csrf})
    detail = client.get(f"/api/v1/events/{record['id']}", headers=reviewer.headers).json()
    assert detail["triage"] == {"status": "investigating", "assignee": reviewer.name}
    assert [(c["author"], c["body"]) for c in detail["comments"]] == [(reviewer.name, "Asked the vendor's manager.")]
    client.post(f"/ui/events/{record['id']}/triage", data={"status": "investigating", "assignee": "", "csrf": csrf})
    assert client.get(f"/api/v1/events/{record['id']}", headers=reviewer.headers).json()["triage"]["assignee"] is None
    entries = [(row.action, row.target, json.loads(row.details)) for row in _audit(collector) if row.action.startswith("event.")]
    assert entries == [
        ("event.triage", record["id"], {"before": {"status": "new", "assignee": None}, "after": {"status": "investigating", "assignee": reviewer.name}}),
        ("event.comment", record["id"], {"length": 27}),
        ("event.triage", record["id"], {"before": {"status": "investigating", "assignee": reviewer.name}, "after": {"status": "investigating", "assignee": None}}),
    ]
    assert client.post(f"/ui/events/{record['id']}/comments", data={"body": "   ", "csrf": csrf}).status_code == 422
    assert client.post(f"/ui/events/{record['id']}/triage", data={"status": "new", "assignee": "nobody", "csrf": csrf}).status_code == 404
    assert client.get("/ui/events/0d8b1b7e-0000-4000-8000-000000000000").status_code == 404


# --- export ----------------------------------------------------------------------------------


def test_export_streams_the_filtered_view_as_csv_and_json_lines_and_is_audited(client, collector, enroll, reviewer):
    agent = enroll()
    usb = [event_record(path=f"/media/jdoe/STICK/{n}.zip") for n in range(3)]
    formula = event_record(type="file.write", channel="file", device=None, path="=HYPERLINK(\"x\")", severity="low")
    _ingest(client, agent, usb + [formula])
    csrf = _log_in(client, reviewer)
    exported = client.post("/ui/events/export", data={"format": "csv", "csrf": csrf, "channel": "usb"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert exported.headers["content-disposition"].startswith('attachment; filename="dlp-events-')
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [row["id"] for row in rows] == [r["id"] for r in usb], "oldest first, only the filtered view"
    assert rows[0]["rules"] == "private_key_pem" and rows[0]["vendor"] == "acme-bpo" and rows[0]["device"]
    everything = client.post("/ui/events/export", data={"format": "csv", "csrf": csrf})
    assert "'=HYPERLINK" in everything.text and everything.text.count("\r\nid,") == 0, "one header row, formulas defused"
    lines = client.post("/ui/events/export", data={"format": "jsonl", "csrf": csrf, "severity": "low"}).text.splitlines()
    assert [json.loads(line)["id"] for line in lines] == [formula["id"]]
    assert client.post("/ui/events/export", data={"format": "xlsx", "csrf": csrf}).status_code == 422
    exports = [(row.actor, json.loads(row.details)) for row in _audit(collector) if row.action == "events.export"]
    assert exports == [
        (reviewer.name, {"format": "csv", "filters": {"channel": "usb"}, "via": "ui"}),
        (reviewer.name, {"format": "csv", "filters": {}, "via": "ui"}),
        (reviewer.name, {"format": "jsonl", "filters": {"severity": "low"}, "via": "ui"}),
    ]


def test_a_large_export_arrives_whole_in_pieces(client, enroll, reviewer):
    agent = enroll()
    records = [event_record() for _ in range(1200)]
    for start in range(0, 1200, 600):
        _ingest(client, agent, records[start:start + 600])
    csrf = _log_in(client, reviewer)
    with client.stream("POST", "/ui/events/export", data={"format": "jsonl", "csrf": csrf}) as answer:
        pieces = list(answer.iter_text())
    ids = [json.loads(line)["id"] for line in "".join(pieces).splitlines()]
    assert ids == [r["id"] for r in records]


# --- roles and admin pages -------------------------------------------------------------------


def test_reviewers_get_a_403_page_on_admin_pages_and_no_links_to_them(client, collector, enroll, reviewer, admin):
    agent = enroll()
    csrf = _log_in(client, reviewer)
    page = client.get("/ui/events")
    assert 'href="/ui/events"' in page.text and 'href="/ui/signatures"' not in page.text and 'href="/ui/audit"' not in page.text
    assert "Revoke" not in client.get("/ui/agents").text
    for path in ("/ui/signatures", "/ui/audit", f"/ui/agents/{agent.id}/revoke"):
        refused = client.get(path)
        assert refused.status_code == 403 and "This page is for admins." in refused.text and "<html" in refused.text, path
    for path, data in ((f"/ui/agents/{agent.id}/revoke", {}), ("/ui/signatures/publish", {"name": "quiet", "body": GOOD}), ("/ui/signatures/rollback", {"version": "1"})):
        assert client.post(path, data={**data, "csrf": csrf}).status_code == 403, path
    assert client.get("/api/v1/agents", headers=admin.headers).json()["items"][0]["status"] == "online"
    assert client.get("/api/v1/signatures/versions", headers=admin.headers).json()["items"] == []
    _log_in(client, admin)
    nav = client.get("/ui/events").text
    assert 'href="/ui/signatures"' in nav and 'href="/ui/audit"' in nav


def test_agents_page_shows_health_and_addresses_and_admins_revoke_with_a_confirmation(client, collector, enroll, admin):
    with collector.db.write() as conn:
        from server.store import vendors

        vendors.create(conn, name="acme-bpo", allowed_cidrs=["10.0.0.0/8"], now=collector.clock())
    agent = enroll()
    client.post("/api/v1/heartbeat", json={"agent_version": "0.2.0", "ruleset_version": "rs-7", "bundle_version": 3, "ruleset_error": "packs/x.yar:3: syntax error",
                                           "spool_depth": 5000, "dropped": 17}, headers=agent.headers)
    csrf = _log_in(client, admin)
    page = client.get("/ui/agents").text
    for text in ("ws-1", "acme-bpo", "online", "agent 0.2.0", "rules rs-7", "bundle 3", "ruleset error: packs/x.yar:3: syntax error", "5,000", "17", "127.0.0.1", "unexpected"):
        assert text in page, text
    assert 'class="flagged"' in page
    assert "ws-1" not in client.get("/ui/agents?vendor=globex-it").text
    confirm = client.get(f"/ui/agents/{agent.id}/revoke")
    assert confirm.status_code == 200 and "Revoke ws-1?" in confirm.text and f'action="/ui/agents/{agent.id}/revoke"' in confirm.text
    done = client.post(f"/ui/agents/{agent.id}/revoke", data={"csrf": csrf}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/ui/agents?notice=revoked"
    assert client.post("/api/v1/heartbeat", json={"agent_version": "0.2.0"}, headers=agent.headers).status_code == 403
    assert "pill-revoked" in client.get("/ui/agents").text
    entry = _audit(collector)[-1]
    assert (entry.actor, entry.action, entry.target) == (admin.name, "agent.revoke", agent.id)


def test_signature_publish_shows_the_compilers_message_and_uploads_publish(client, collector, admin, enroll):
    enroll()
    csrf = _log_in(client, admin)
    refused = client.post("/ui/signatures/publish", data={"csrf": csrf, "name": "broken", "body": BROKEN, "note": "try"})
    assert refused.status_code == 422
    assert "broken.yar:1: undefined string &#34;$b&#34;" in refused.text and "Nothing was published" in refused.text
    assert "rule broken { strings: $a = &#34;x&#34; condition: $b }" in refused.text, "the pasted pack is kept for fixing"
    files = [("files", ("quiet.yar", GOOD.encode(), "text/plain"))]
    published = client.post("/ui/signatures/publish", data={"csrf": csrf, "vendors": ["acme-bpo"], "note": "from a file"}, files=files, follow_redirects=False)
    assert published.status_code == 303 and published.headers["location"] == "/ui/signatures?published=1"
    page = client.get("/ui/signatures?published=1").text
    assert "Published version 1" in page and "quiet</code> → acme-bpo" in page and "from a file" in page
    not_rules = client.post("/ui/signatures/publish", data={"csrf": csrf}, files=[("files", ("notes.txt", b"hello", "text/plain"))])
    assert not_rules.status_code == 422 and "only .yar or .yara files" in not_rules.text
    assert client.post("/ui/signatures/publish", data={"csrf": csrf}).status_code == 422
    client.post("/ui/signatures/publish", data={"csrf": csrf, "name": "loud", "body": GOOD.replace("quiet_word", "loud_word")})
    rolled = client.post("/ui/signatures/rollback", data={"csrf": csrf, "version": "1"}, follow_redirects=False)
    assert rolled.headers["location"] == "/ui/signatures?published=3"
    versions = client.get("/api/v1/signatures/versions", headers=admin.headers).json()["items"]
    assert [(v["version"], v["rollback_of"]) for v in versions] == [(3, 1), (2, None), (1, None)]
    assert [row.action for row in _audit(collector) if row.action.startswith("signatures.")] == ["signatures.publish", "signatures.publish", "signatures.rollback"]
    assert client.post("/ui/signatures/rollback", data={"csrf": csrf, "version": "99"}).status_code == 404


def test_audit_page_verifies_the_chain_on_display(client, collector, admin):
    _log_in(client, admin)
    page = client.get("/ui/audit")
    assert "Hash chain verified just now: all 1 entries are intact." in page.text and "user.login" in page.text
    with collector.db.write() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 1).values(actor="mallory"))
    broken = client.get("/ui/audit")
    assert "The hash chain is broken:" in broken.text and "entry 1 was altered" in broken.text


# --- vendors overview ------------------------------------------------------------------------


def test_vendor_overview_counts_match_the_events_before_and_after_folding(client, collector, clock, enroll, reviewer):
    acme, globex = enroll(vendor="acme-bpo", hostname="a1"), enroll(vendor="globex-it", hostname="g1")
    today, yesterday, old = "2026-11-24T08:00:00Z", "2026-11-23T15:00:00Z", "2026-09-01T00:00:00Z"
    _ingest(client, acme, [
        event_record(occurred_at=today, user="ann"),
        event_record(occurred_at=today, user="ann", severity="low", matches=[{"rule": "marking", "severity": "low"}], device=None),
        event_record(occurred_at=yesterday, user="bob", severity="high", matches=[{"rule": "aws_key", "severity": "high"}, {"rule": "marking"}], device=None),
        event_record(occurred_at=old, user="carl"),
        event_record(occurred_at="2026-12-30T00:00:00Z", user="dave"),
    ])
    _ingest(client, globex, [event_record(occurred_at=yesterday, user="eve", severity="medium", matches=[{"rule": "marking", "severity": "medium"}], device=None)])

    def figures() -> dict[str, Any]:
        with collector.db.read() as conn:
            found = stats.vendor_overview(conn, now=clock(), days=30, scope=Scope.everything())
        return {s.name: (s.total, {d.isoformat(): c for d, c in s.per_day.items()}, s.top_rules, s.top_users, s.top_devices, s.agents, s.agents_online) for s in found}

    expected = {
        "acme-bpo": (3, {"2026-11-24": {"critical": 1, "low": 1}, "2026-11-23": {"high": 1}}, [("marking", 2), ("aws_key", 1), ("private_key_pem", 1)],
                     [("ann", 2), ("bob", 1)], [("4C530001", 1)], 1, 1),
        "globex-it": (1, {"2026-11-23": {"medium": 1}}, [("marking", 1)], [("eve", 1)], [], 1, 1),
    }
    assert figures() == expected
    with collector.db.write() as conn:
        assert stats.fold(conn, now=clock()) == 0, "events younger than the lag stay unfolded"
    clock.advance(minutes=10)
    with collector.db.write() as conn:
        assert stats.fold(conn, now=clock(), chunk=4) == 4
        assert stats.fold(conn, now=clock(), chunk=4) == 2
        assert stats.fold(conn, now=clock()) == 0
    clock.advance(minutes=-10)
    assert figures() == expected, "folded counts plus the unfolded tail give the same figures"
    _ingest(client, globex, [event_record(occurred_at=today, user="eve")])
    assert figures()["globex-it"][0] == 2
    with collector.db.read() as conn:
        assert stats.vendor_overview(conn, now=clock(), days=90, scope=Scope.everything())[0].total == 4, "a longer window reaches September"

    _log_in(client, reviewer)
    page = client.get("/ui/vendors")
    assert page.status_code == 200
    assert "<strong>3</strong> events" in page.text and "<strong>2</strong> events" in page.text
    assert page.text.count('<svg class="chart"') == 2 and page.text.count('class="sev-bg-critical" x=') == 2
    assert '<title>2026-11-24: 1 critical</title>' in page.text
    assert 'href="/ui/events?vendor=acme-bpo&since=2026-10-26&rule=marking"' in page.text.replace("&amp;", "&")
    assert client.get("/ui/vendors?days=500").status_code == 422


def test_the_stats_duty_folds_only_what_arrived_a_while_ago(client, collector, clock, enroll):
    from server.maintenance import roll_up_stats

    agent = enroll()
    _ingest(client, agent, [event_record() for _ in range(3)])
    assert roll_up_stats(collector) == 0
    clock.advance(seconds=stats.FOLD_LAG.total_seconds() + 1)
    _ingest(client, agent, [event_record()])
    assert roll_up_stats(collector) == 3
    with collector.db.read() as conn:
        assert stats.folded_upto(conn) == 3 and stats.vendor_overview(conn, now=clock(), scope=Scope.everything())[0].total == 4


def test_folding_steps_over_gaps_in_seq(client, collector, clock, enroll):
    agent = enroll()
    _ingest(client, agent, [event_record(matches=[], severity=None) for _ in range(3)])
    with collector.db.write() as conn:
        conn.execute(update(event_table).where(event_table.c.seq == 3).values(seq=50_000))  # as if 49,996 numbers were spent on duplicates
    clock.advance(minutes=10)
    with collector.db.write() as conn:
        assert stats.fold(conn, now=clock(), chunk=100) == 2
        assert stats.fold(conn, now=clock(), chunk=100) == 50_000 - 2
        assert stats.fold(conn, now=clock(), chunk=100) == 0
        assert stats.folded_upto(conn) == 50_000 and stats.vendor_overview(conn, now=clock(), scope=Scope.everything())[0].total == 3


# --- headers, escaping, OpenAPI --------------------------------------------------------------


def test_pages_carry_a_strict_csp_and_escape_what_agents_send(client, enroll, reviewer):
    agent = enroll()
    hostile = event_record(path='/media/<script>alert("x")</script>.zip', user="<b>boss</b>", host="ws\"><img src=x>")
    _ingest(client, agent, [hostile])
    for path in ("/ui/login", "/"):
        headers = client.get(path, follow_redirects=False).headers
        assert headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in headers["content-security-policy"]
    _log_in(client, reviewer)
    for path in ("/ui/events", f"/ui/events/{hostile['id']}"):
        page = client.get(path)
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
        assert "<script>alert" not in page.text and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
        assert "<b>boss</b>" not in page.text and "<img src=x>" not in page.text
        assert re.search(r"<script(?![^>]*\bsrc=\"/ui/static/ui\.js\")", page.text) is None, "no inline script"
        assert " style=" not in page.text and "<style" not in page.text
    static = client.get("/ui/static/ui.css")
    assert static.status_code == 200 and static.headers["content-type"].startswith("text/css")
    assert client.get("/api/v1/events", headers=reviewer.headers).headers.get("content-security-policy") is None


# Every character the review UI must never pass on raw: it reorders text (bidi) or is invisible.
HIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def test_bidi_and_control_characters_from_agents_show_as_visible_marks(client, enroll, admin):
    agent = enroll(hostname="ws\u202e1-\x1b[2J")
    hostile = event_record(
        path="/home/jdoe/invoice\u202egpj.exe", user="j\u2066doe\u2069\u200f", severity="high",
        matches=[{"rule": "label\u202bx", "namespace": "n\u061c", "severity": "high", "member": "a\x9b31m.py\x07", "offsets": [0]}],
        device={"vendor": "San\u202dDisk", "serial": "4C53\x08\x08", "label": "ST\u2067ICK"},
    )  # fmt: skip
    _ingest(client, agent, [hostile])
    client.post("/api/v1/heartbeat", json={"agent_version": "0.1.0", "ruleset_version": "rs\u202e7", "ruleset_error": "x.yar\x1b]0;owned\x07"}, headers=agent.headers)
    _log_in(client, admin)
    for path in ("/ui/events", f"/ui/events/{hostile['id']}", "/ui/agents", "/ui/audit"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert HIDDEN.search(page.text) is None, f"{path}: raw {HIDDEN.search(page.text).group()!r}"
    listed = client.get("/ui/events").text
    assert "invoice&lt;U+202E&gt;gpj.exe" in listed and "j&lt;U+2066&gt;doe&lt;U+2069&gt;&lt;U+200F&gt;" in listed
    detail = client.get(f"/ui/events/{hostile['id']}").text
    for shown in ("invoice&lt;U+202E&gt;gpj.exe", "label&lt;U+202B&gt;x", "a&lt;U+009B&gt;31m.py&lt;U+0007&gt;", "San&lt;U+202D&gt;Disk",
                  "4C53&lt;U+0008&gt;&lt;U+0008&gt;", "ST&lt;U+2067&gt;ICK"):
        assert shown in detail, shown
    agents = client.get("/ui/agents").text
    assert "ws&lt;U+202E&gt;1-&lt;U+001B&gt;[2J" in agents and "rs&lt;U+202E&gt;7" in agents and "x.yar&lt;U+001B&gt;]0;owned&lt;U+0007&gt;" in agents


def test_ui_routes_stay_out_of_the_openapi_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert paths and not [path for path in paths if path == "/" or path.startswith("/ui")]


def test_window_start_is_midnight_utc(clock):
    assert stats.window_start(datetime(2026, 11, 24, 23, 59, tzinfo=timezone(timedelta(hours=-5))), 1).isoformat() == "2026-11-25"
    assert stats.window_start(clock(), 30).isoformat() == "2026-10-26"


def test_agents_page_shows_parts_that_died_or_are_degraded(client, enroll, reviewer):
    agent = enroll(hostname="ws-threads")
    sources = {
        "files": "ok",
        "shipper": {"state": "degraded", "deaths": 3, "last_error": "MemoryError: bundle"},
        "clipboard": {"state": "degraded", "message": "no display"},
        "usb": ["not", "a", "report"],
    }
    beat = client.post("/api/v1/heartbeat", json={"agent_version": "0.1.0", "sources": sources}, headers=agent.headers)
    assert beat.status_code == 200, beat.text
    _log_in(client, reviewer)
    page = client.get("/ui/agents").text
    assert "shipper: degraded, died 3 time(s): MemoryError: bundle" in page
    assert "clipboard: degraded" in page and "files: ok" not in page
    assert "usb: [&#39;not&#39;, &#39;a&#39;, &#39;report&#39;]" in page


HOSTILE_CMDLINE = 'cp "<img src=x onerror=alert(1)>" |evil= \\x\nsecond line\u202egpj.exe'
OWNER = {
    "pid": 4242, "exe": "/usr/bin/<b>cp", "cmdline": HOSTILE_CMDLINE, "uid": 1000, "user": "<i>jdoe</i>", "ppid": 4200,
    "parents": [{"pid": 4200, "exe": "/usr/bin/bash", "cmdline": "bash -l", "uid": 1000, "user": "jdoe", "ppid": 1}],
}  # fmt: skip


def test_the_process_and_enforcement_show_escaped_on_the_list_and_the_event(client, enroll, reviewer):
    agent = enroll()
    cleared = event_record(type="clipboard.copy", channel="clipboard", path=None, sha256=None, device=None, process=OWNER,
                           enforcement={"action": "clear", "mode": "enforce", "done": True, "detail": "the clipboard selection was replaced by a notice"})
    audited = event_record(enforcement={"action": "quarantine", "mode": "audit", "done": False, "detail": None, "note": "<u>x</u>"})
    _ingest(client, agent, [cleared, audited])
    _log_in(client, reviewer)
    listed = client.get("/ui/events").text
    assert "<b>cp" not in listed and ">&lt;b&gt;cp</span>" in listed  # the base name of the hostile exe, escaped
    assert "<img src=x" not in listed and "&lt;img src=x onerror=alert(1)&gt;" in listed  # the command line, in a title
    assert "(as &lt;i&gt;jdoe&lt;/i&gt;)" in listed and "second line&lt;U+202E&gt;gpj.exe" in listed
    page = client.get(f"/ui/events/{cleared['id']}").text
    process = page[page.index("<h2>Process</h2>"):]
    assert "<img src=x" not in page and "<b>cp" not in page and "<i>jdoe" not in page
    for shown in ("/usr/bin/&lt;b&gt;cp", "&lt;img src=x onerror=alert(1)&gt;&#34; |evil= \\x\nsecond line&lt;U+202E&gt;gpj.exe",
                  "&lt;i&gt;jdoe&lt;/i&gt; <span class=\"muted small\">uid 1000</span>", "4242", "parent 4200", "bash -l"):
        assert shown in process, shown
    assert "<strong>cleared</strong>" in page and "the clipboard selection was replaced by a notice" in page
    audit_page = client.get(f"/ui/events/{audited['id']}").text
    assert "<strong>would have quarantined (audit mode)</strong>" in audit_page and "nothing was changed" in audit_page
    assert "<u>x</u>" not in audit_page and "&lt;u&gt;x&lt;/u&gt;" in audit_page
    assert "<h2>Process</h2>" not in audit_page
