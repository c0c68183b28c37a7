"""Cases through the API on SQLite and PostgreSQL: lifecycle, severity, due dates, history, evidence export and scope."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from typing import Any

import pytest
from sqlalchemy import select

from server.case_export import chained_text
from server.db.tables import vendors
from server.store import audit, case_lists
from server.store import users as user_store
from tests.collector_env import Person, event_record, send_events


def scoped(collector: Any, name: str, role: str, vendor: str) -> Person:
    """A reviewer scoped to ``vendor``, or that vendor's lead."""
    with collector.db.write() as conn:
        vendor_id = conn.execute(select(vendors.c.id).where(vendors.c.name == vendor)).scalar_one()
        user, password, token = user_store.create(conn, name=name, role=role, now=collector.clock(), vendor_ids=(vendor_id,))
    return Person(user.name, password, token)


@pytest.fixture
def world(client, enroll) -> dict[str, Any]:
    """Events of two vendors: acme's critical and low, globex's high."""
    acme, globex = enroll(vendor="acme-bpo", hostname="ws-a"), enroll(vendor="globex", hostname="ws-g")
    crit = event_record(severity="critical", occurred_at="2026-11-24T08:00:00Z")
    low = event_record(severity="low", user="mary", occurred_at="2026-11-24T07:00:00Z", path="/tmp/notes.txt", device=None, channel="file", type="file.write")
    high = event_record(severity="high", user="gus", occurred_at="2026-11-24T08:30:00Z")
    send_events(client, acme, crit, low)
    send_events(client, globex, high)
    return {"crit": crit["id"], "low": low["id"], "high": high["id"]}


def _seq(client: Any, person: Person, event_id: str) -> int:
    return client.get(f"/api/v1/events/{event_id}", headers=person.headers).json()["seq"]


def _create(client: Any, person: Person, events: list[Any], **extra: Any) -> dict[str, Any]:
    answer = client.post("/api/v1/cases", json={"title": "USB leak", "events": events, **extra}, headers=person.headers)
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_a_case_from_events_by_id_or_seq_then_added_removed_assigned_commented_and_closed(client, collector, world, reviewer, admin):
    made = _create(client, reviewer, [world["crit"], _seq(client, reviewer, world["low"])])
    case_id = made["id"]
    assert made["status"] == "open" and made["event_count"] == 2 and made["severity"] == "critical" and made["severity_set"] is None
    assert [e["id"] for e in made["events"]] == [world["low"], world["crit"]]  # time order
    path = f"/api/v1/cases/{case_id}"
    added = client.post(f"{path}/events", json={"events": [world["high"], world["crit"]]}, headers=reviewer.headers).json()
    assert added["event_count"] == 3
    removed = client.delete(f"{path}/events/{world['crit']}", headers=reviewer.headers).json()
    assert removed["event_count"] == 2 and removed["severity"] == "high"
    assert client.delete(f"{path}/events/{world['crit']}", headers=reviewer.headers).status_code == 404
    assert client.get(f"/api/v1/events/{world['crit']}", headers=reviewer.headers).status_code == 200  # the event stays

    assert client.patch(path, json={"severity": "low"}, headers=reviewer.headers).json()["severity"] == "low"
    assert client.patch(path, json={"severity": None}, headers=reviewer.headers).json()["severity"] == "high"
    assigned = client.patch(path, json={"assignee": "alice", "status": "investigating"}, headers=reviewer.headers).json()
    assert assigned["assignee"] == "alice" and assigned["status"] == "investigating"
    assert client.patch(path, json={"assignee": "nobody-here"}, headers=reviewer.headers).status_code == 404
    commented = client.post(f"{path}/comments", json={"body": "Checked with HR", "internal": True}, headers=admin.headers)
    assert commented.status_code == 201 and commented.json()["comments"][0] | {"id": 0} == {
        "id": 0, "author": "alice", "body": "Checked with HR", "internal": True, "created_at": "2026-11-24T09:00:00.000Z"
    }  # fmt: skip

    refused = client.patch(path, json={"status": "closed"}, headers=reviewer.headers)
    assert refused.status_code == 422 and "outcome" in refused.json()["detail"]
    assert client.patch(path, json={"outcome": "benign"}, headers=reviewer.headers).status_code == 422
    assert client.patch(path, json={"status": "closed", "outcome": "leaked"}, headers=reviewer.headers).status_code == 422
    closed = client.patch(path, json={"status": "closed", "outcome": "confirmed_leak"}, headers=reviewer.headers).json()
    assert closed["status"] == "closed" and closed["outcome"] == "confirmed_leak" and closed["closed_at"] == "2026-11-24T09:00:00.000Z"
    reopened = client.patch(path, json={"status": "open"}, headers=reviewer.headers).json()
    assert reopened["outcome"] is None and reopened["closed_at"] is None

    history = client.get(path, headers=reviewer.headers).json()["history"]
    assert [h["action"] for h in history] == [
        "case.create", "case.events_add", "case.events_remove", "case.update", "case.update", "case.update", "case.comment", "case.update", "case.update"
    ]  # fmt: skip
    assert history[1]["details"] == {"events": [world["high"]]}  # crit was in it already
    assert history[5]["details"] == {"before": {"assignee": None, "status": "open"}, "after": {"assignee": "alice", "status": "investigating"}}
    assert history[6]["details"] == {"comment": commented.json()["comments"][0]["id"], "internal": True, "length": 15}
    with collector.db.read() as conn:
        assert audit.verify(conn).ok
    unchanged = client.patch(path, json={"status": "open"}, headers=reviewer.headers)
    assert unchanged.status_code == 200 and len(unchanged.json()["history"]) == len(history)  # nothing changed, nothing recorded


def test_inputs_are_refused_whole(client, world, reviewer):
    assert client.post("/api/v1/cases", json={"title": "x", "events": []}, headers=reviewer.headers).status_code == 422
    assert client.post("/api/v1/cases", json={"title": "x", "events": [world["crit"], "no-such-event"]}, headers=reviewer.headers).status_code == 404
    assert client.post("/api/v1/cases", json={"title": "x" * 201, "events": [world["crit"]]}, headers=reviewer.headers).status_code == 422
    assert client.post("/api/v1/cases", json={"title": "x", "events": [world["crit"]], "severity": "huge"}, headers=reviewer.headers).status_code == 422
    assert client.get("/api/v1/cases", headers=reviewer.headers).json()["items"] == []
    assert client.get("/api/v1/cases/999", headers=reviewer.headers).status_code == 404
    assert client.get("/api/v1/cases", params={"status": "done"}, headers=reviewer.headers).status_code == 422


def test_due_dates_overdue_filters_and_every_sort_pages_over_each_case_once(client, clock, world, reviewer):
    dues = ["2026-11-25T00:00:00Z", None, "2026-11-23T00:00:00Z", "2026-11-30T00:00:00Z", None, "2026-11-23T00:00:00Z"]
    ids = []
    for n, due in enumerate(dues):
        clock.advance(minutes=1)
        extra = {"due_at": due} if due else {}
        ids.append(_create(client, reviewer, [world["crit"] if n % 2 else world["high"]], **extra)["id"])
    client.patch(f"/api/v1/cases/{ids[5]}", json={"status": "closed", "outcome": "benign"}, headers=reviewer.headers)
    listed = client.get("/api/v1/cases", params={"overdue": "true"}, headers=reviewer.headers).json()["items"]
    assert [c["id"] for c in listed] == [ids[2]] and listed[0]["overdue"]
    expected = {
        "due": [ids[2], ids[5], ids[0], ids[3], ids[1], ids[4]],
        "updated": [ids[5], ids[4], ids[3], ids[2], ids[1], ids[0]],
        "severity": [ids[5], ids[3], ids[1], ids[4], ids[2], ids[0]],  # critical ones first, then high; newest first within
    }
    for sort, order in expected.items():
        seen, cursor = [], None
        while True:
            params = {"sort": sort, "limit": 2, **({"cursor": cursor} if cursor else {})}
            answer = client.get("/api/v1/cases", params=params, headers=reviewer.headers).json()
            seen += [c["id"] for c in answer["items"]]
            cursor = answer["next_cursor"]
            if cursor is None:
                break
        assert seen == order, sort
    for forged in ("ZDU6MQ", "dTk5OTk5OTk5OTk5OTk5OTk5OTox", "r5:1x"):  # another sort's; a time past the year 9999; not ours
        assert client.get("/api/v1/cases", params={"sort": "updated", "cursor": forged}, headers=reviewer.headers).status_code == 422
    by_status = client.get("/api/v1/cases", params={"status": "closed"}, headers=reviewer.headers).json()["items"]
    assert [c["id"] for c in by_status] == [ids[5]]
    critical = client.get("/api/v1/cases", params={"severity": "critical"}, headers=reviewer.headers).json()["items"]
    assert sorted(c["id"] for c in critical) == [ids[1], ids[3], ids[5]]
    globex = client.get("/api/v1/cases", params={"vendor": "globex"}, headers=reviewer.headers).json()["items"]
    assert sorted(c["id"] for c in globex) == [ids[0], ids[2], ids[4]]
    client.patch(f"/api/v1/cases/{ids[0]}", json={"assignee": "rita"}, headers=reviewer.headers)
    assert [c["id"] for c in client.get("/api/v1/cases", params={"assignee": "rita"}, headers=reviewer.headers).json()["items"]] == [ids[0]]


def _unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_the_evidence_export_is_self_contained_audited_and_its_hashes_verify(client, collector, world, reviewer):
    made = _create(client, reviewer, [world["crit"], world["high"]], due_at="2026-11-20T00:00:00Z")
    path = f"/api/v1/cases/{made['id']}"
    client.patch(path, json={"title": "<script>alert(1)</script> leak"}, headers=reviewer.headers)
    client.post(f"{path}/comments", json={"body": "<img src=x onerror=alert(2)>"}, headers=reviewer.headers)
    answer = client.get(f"{path}/export", headers=reviewer.headers)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    assert f'filename="case-{made["id"]}-20261124T090000Z.zip"' in answer.headers["content-disposition"]
    files = _unzip(answer.content)
    assert set(files) == {"case.json", "summary.html", "SHA256SUMS"}
    for line in files["SHA256SUMS"].decode().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256(files[name]).hexdigest() == digest
    doc = json.loads(files["case.json"])
    assert doc["case"]["title"] == "<script>alert(1)</script> leak" and doc["case"]["overdue"]
    assert [e["id"] for e in doc["events"]] == [world["crit"], world["high"]] and doc["events"][0]["device"]["serial"] == "4C530001"
    assert doc["chain"] == {"ok": True, "from_seq": doc["audit"][0]["seq"], "checkpoint": None, "entries": 4, "problem": None}  # walked from the case's first entry
    assert [e["action"] for e in doc["audit"]] == ["case.create", "case.update", "case.comment", "case.export"]
    prev = "0" * 64
    for entry in doc["audit"]:
        assert entry["prev_hash"] == prev and json.loads(entry["details_json"]) == entry["details"]
        assert hashlib.sha256((entry["prev_hash"] + chained_text(entry)).encode()).hexdigest() == entry["hash"]
        prev = entry["hash"]
    html = files["summary.html"].decode()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; leak" in html and "<img" not in html
    assert "4C530001" in html and "overdue" in html and doc["audit"][-1]["hash"] in html
    assert client.get(path, headers=reviewer.headers).json()["history"][-1]["action"] == "case.export"


def test_a_scoped_reviewer_sees_only_cases_and_events_of_their_vendor(client, collector, world, reviewer):
    mixed = _create(client, reviewer, [world["crit"], world["high"]])
    theirs = _create(client, reviewer, [world["high"]])
    acme_only = scoped(collector, "sam", "reviewer", "acme-bpo")
    listed = client.get("/api/v1/cases", headers=acme_only.headers).json()["items"]
    assert [c["id"] for c in listed] == [mixed["id"]] and listed[0]["event_count"] == 1 and listed[0]["severity"] == "critical"
    shown = client.get(f"/api/v1/cases/{mixed['id']}", headers=acme_only.headers).json()
    assert [e["id"] for e in shown["events"]] == [world["crit"]] and shown["event_count"] == 1
    assert shown["history"] == []  # the creation names globex's event: withheld
    for method, url, body in (
        ("get", f"/api/v1/cases/{theirs['id']}", None),
        ("get", f"/api/v1/cases/{theirs['id']}/export", None),
        ("post", f"/api/v1/cases/{theirs['id']}/comments", {"body": "hello"}),
        ("patch", f"/api/v1/cases/{theirs['id']}", {"title": "mine"}),
        ("post", f"/api/v1/cases/{mixed['id']}/events", {"events": [world["high"]]}),
        ("delete", f"/api/v1/cases/{mixed['id']}/events/{world['high']}", None),
        ("post", "/api/v1/cases", {"title": "t", "events": [world["high"]]}),
    ):
        answer = client.request(method.upper(), url, json=body, headers=acme_only.headers)
        assert answer.status_code == 404, (method, url, answer.text)
    assert client.get("/api/v1/cases", params={"vendor": "globex"}, headers=acme_only.headers).json()["items"] == []
    own = client.post("/api/v1/cases", json={"title": "acme", "events": [world["low"]]}, headers=acme_only.headers)
    assert own.status_code == 201
    doc = json.loads(_unzip(client.get(f"/api/v1/cases/{mixed['id']}/export", headers=acme_only.headers).content)["case.json"])
    assert [e["id"] for e in doc["events"]] == [world["crit"]] and "globex" not in json.dumps(doc["events"])
    assert doc["audit"][0] == {"seq": doc["audit"][0]["seq"], "prev_hash": doc["audit"][0]["prev_hash"], "hash": doc["audit"][0]["hash"], "withheld": True}
    assert world["high"] not in json.dumps(doc)


def test_a_vendor_lead_reads_and_comments_but_never_sees_internal_comments_or_changes_a_case(client, collector, world, reviewer):
    made = _create(client, reviewer, [world["crit"], world["low"], world["high"]])
    path = f"/api/v1/cases/{made['id']}"
    client.post(f"{path}/comments", json={"body": "customer only", "internal": True}, headers=reviewer.headers)
    client.post(f"{path}/comments", json={"body": "please explain"}, headers=reviewer.headers)
    lead = scoped(collector, "lee", "vendor_lead", "acme-bpo")
    shown = client.get(path, headers=lead.headers).json()
    assert [c["body"] for c in shown["comments"]] == ["please explain"] and shown["people"] == []
    assert {e["id"] for e in shown["events"]} == {world["crit"], world["low"]}
    users_shown = {e["user"] for e in shown["events"]}
    assert users_shown.isdisjoint({"jdoe", "mary"}) and all(name.startswith("person-") for name in users_shown)
    assert all(not (h["details"] or {}).get("internal") for h in shown["history"])
    assert client.post(f"{path}/comments", json={"body": "it was a backup"}, headers=lead.headers).status_code == 201
    assert client.post(f"{path}/comments", json={"body": "secret", "internal": True}, headers=lead.headers).status_code == 403
    assert client.patch(path, json={"status": "closed", "outcome": "benign"}, headers=lead.headers).status_code == 403
    assert client.patch(path, json={"assignee": "rita"}, headers=lead.headers).status_code == 403
    assert client.post("/api/v1/cases", json={"title": "t", "events": [world["crit"]]}, headers=lead.headers).status_code == 403
    assert client.post(f"{path}/events", json={"events": [world["crit"]]}, headers=lead.headers).status_code == 403
    assert client.post(f"{path}/reveal", json={"user": "jdoe"}, headers=lead.headers).status_code == 403
    files = _unzip(client.get(f"{path}/export", headers=lead.headers).content)
    assert b"customer only" not in files["case.json"] and b"customer only" not in files["summary.html"]
    assert b"jdoe" not in files["case.json"] and b"jdoe" not in files["summary.html"]

    people = client.get(path, headers=reviewer.headers).json()["people"]
    assert people == [{"user": "jdoe", "vendor": "acme-bpo"}, {"user": "mary", "vendor": "acme-bpo"}, {"user": "gus", "vendor": "globex"}]
    assert client.post(f"{path}/reveal", json={"user": "nobody"}, headers=reviewer.headers).status_code == 404
    revealed = client.post(f"{path}/reveal", json={"user": "jdoe"}, headers=reviewer.headers)
    assert revealed.json() == {"user": "jdoe", "vendors": ["acme-bpo"]}
    after = client.get(path, headers=lead.headers).json()
    assert {e["user"] for e in after["events"]} == {"jdoe", next(e["user"] for e in shown["events"] if e["id"] == world["low"])}
    assert after["history"][-1]["action"] == "case.reveal" and after["history"][-1]["details"]["user"] == "jdoe"
    with collector.db.read() as conn:
        assert audit.verify(conn).ok


def test_cases_of_an_event_and_of_a_user_follow_scope(client, collector, world, reviewer):
    first = _create(client, reviewer, [world["crit"], world["high"]])
    second = _create(client, reviewer, [world["high"]])
    acme_only = scoped(collector, "sam", "reviewer", "acme-bpo")
    now = collector.clock()
    with collector.db.read() as conn:
        assert [c["id"] for c in case_lists.for_event(conn, event_ref=world["high"], scope=user_store.get(conn, name="rita").scope, now=now)] == [
            second["id"], first["id"]
        ]  # fmt: skip
        scope = user_store.get(conn, name="sam").scope
        assert [c["id"] for c in case_lists.for_user(conn, user_name="jdoe", scope=scope, now=now)] == [first["id"]]
        assert case_lists.for_user(conn, user_name="gus", scope=scope, now=now) == []
        with pytest.raises(Exception, match="no event"):
            case_lists.for_event(conn, event_ref=world["high"], scope=scope, now=now)
    assert acme_only.name == "sam"


def test_a_vendor_scoped_authors_comments_and_others_exports_stay_with_their_vendors(client, collector, world, reviewer):
    mixed = _create(client, reviewer, [world["crit"], world["high"]])
    path = f"/api/v1/cases/{mixed['id']}"
    acme_lead, globex_lead = scoped(collector, "lee", "vendor_lead", "acme-bpo"), scoped(collector, "gil", "vendor_lead", "globex")
    acme_reviewer, globex_reviewer = scoped(collector, "sam", "reviewer", "acme-bpo"), scoped(collector, "gwen", "reviewer", "globex")
    assert client.post(f"{path}/comments", json={"body": "acme lead: on leave"}, headers=acme_lead.headers).status_code == 201
    assert client.post(f"{path}/comments", json={"body": "everyone: please explain"}, headers=reviewer.headers).status_code == 201
    assert client.get(f"{path}/export", headers=reviewer.headers).status_code == 200
    for reader, sees_lead in ((reviewer, True), (acme_reviewer, True), (acme_lead, True), (globex_lead, False), (globex_reviewer, False)):
        shown = client.get(path, headers=reader.headers).json()
        assert [c["body"] for c in shown["comments"]] == (["acme lead: on leave"] if sees_lead else []) + ["everyone: please explain"], reader.name
        assert ("lee" in json.dumps(shown)) == sees_lead, reader.name
        exports = [h for h in shown["history"] if h["action"] == "case.export"]
        assert exports == [] or reader is reviewer, reader.name  # whole-case counts: not for a scoped reader
        files = _unzip(client.get(f"{path}/export", headers=reader.headers).content)
        assert (b"acme lead" in files["case.json"]) == sees_lead and (b"lee" in files["case.json"]) == sees_lead, reader.name
        audit_entries = json.loads(files["case.json"])["audit"]
        if reader is not reviewer:
            assert [e for e in audit_entries if e.get("action") == "case.export" and e["actor"] != reader.name] == [], reader.name


def test_a_scoped_reviewers_severity_filter_and_order_follow_the_events_it_sees(client, collector, world, reviewer):
    mixed = _create(client, reviewer, [world["low"], world["high"]])  # acme's low, globex's high
    acme_crit = _create(client, reviewer, [world["crit"]])
    acme_low = _create(client, reviewer, [world["low"]])
    set_high = _create(client, reviewer, [world["low"], world["high"]], severity="high")  # a set severity holds for everyone
    acme_only = scoped(collector, "sam", "reviewer", "acme-bpo")

    def listed(person: Person, **params: str) -> list[tuple[int, str]]:
        answer = client.get("/api/v1/cases", params=params, headers=person.headers)
        assert answer.status_code == 200, answer.text
        return [(c["id"], c["severity"]) for c in answer.json()["items"]]

    assert listed(acme_only, severity="high") == [(set_high["id"], "high")]
    assert listed(acme_only, severity="low", sort="severity") == [(acme_low["id"], "low"), (mixed["id"], "low")]
    assert {c for c, _ in listed(reviewer, severity="high")} == {mixed["id"], set_high["id"]}
    expected = [(acme_crit["id"], "critical"), (set_high["id"], "high"), (acme_low["id"], "low"), (mixed["id"], "low")]
    assert listed(acme_only, sort="severity") == expected
    seen, cursor = [], None
    while True:
        answer = client.get("/api/v1/cases", params={"sort": "severity", "limit": 1, **({"cursor": cursor} if cursor else {})}, headers=acme_only.headers).json()
        seen += [(c["id"], c["severity"]) for c in answer["items"]]
        if not (cursor := answer["next_cursor"]):
            break
    assert seen == expected


def test_due_dates_before_1970_page_with_their_own_cursors(client, world, reviewer):
    ids = [_create(client, reviewer, [world["crit"]], due_at=due)["id"] for due in ("1969-07-20T20:17:00Z", "1965-01-01T00:00:00Z", "2026-12-01T00:00:00Z")]
    seen, cursor = [], None
    while True:
        answer = client.get("/api/v1/cases", params={"sort": "due", "limit": 1, **({"cursor": cursor} if cursor else {})}, headers=reviewer.headers)
        assert answer.status_code == 200, answer.text
        seen += [c["id"] for c in answer.json()["items"]]
        if not (cursor := answer.json()["next_cursor"]):
            break
    assert seen == [ids[1], ids[0], ids[2]]
    for forged in ("ZC0wOjE", "ZC0tMTox"):  # "d-0:1" (not how we spell zero), "d--1:1"
        assert client.get("/api/v1/cases", params={"sort": "due", "cursor": forged}, headers=reviewer.headers).status_code == 422


def test_case_and_event_cursors_share_one_strict_decoding():
    from server.errors import InvalidInput
    from server.store.case_cursors import CaseCursor
    from server.store.cursors import Cursor, decode_text, encode_text

    assert decode_text(encode_text("d-5:1")) == "d-5:1" and CaseCursor.decode(encode_text("d-5:1")) == CaseCursor("due", -5, 1)
    assert Cursor.decode(encode_text("s42")) == Cursor("newest", 42)
    for junk in ("ZC01OjE!", "ZC0 1OjE", "Z", "/y8v", "ZC01OjE="):  # outside the alphabet, truncated, standard alphabet; padded
        if not junk.endswith("="):  # valid base64, refused by the spelling check
            with pytest.raises(ValueError):
                decode_text(junk)
        with pytest.raises(InvalidInput):
            CaseCursor.decode(junk)
        with pytest.raises(InvalidInput):
            Cursor.decode(junk)
