"""Review API: filters, keyset paging, triage, comments, roles, hash-chained audit log."""

from __future__ import annotations

from sqlalchemy import delete, update

from server.db.tables import audit_log
from server.maintenance import checkpoint_audit
from server.store import audit
from tests.collector_env import add_user, event_record


def _ingest(client, agent, records):
    response = client.post("/api/v1/events", json={"events": records}, headers=agent.headers)
    assert response.status_code == 200, response.text


def _ids(client, person, **params):
    return [item["id"] for item in client.get("/api/v1/events", params=params, headers=person.headers).json()["items"]]


def test_filters_select_exactly_the_matching_events(client, enroll, reviewer):
    acme, other = enroll(vendor="acme-bpo", hostname="a1"), enroll(vendor="globex-it", hostname="g1")
    usb_critical = event_record()
    file_low = event_record(type="file.write", channel="file", severity="low", user="mallory", device=None,
                            matches=[{"rule": "marking", "severity": "low"}], occurred_at="2026-11-20T10:00:00Z")
    clip = event_record(type="clipboard.copy", channel="clipboard", severity="high", device=None, sha256="ab" * 32,
                        matches=[{"rule": "aws_key", "severity": "high"}])
    _ingest(client, acme, [usb_critical, file_low])
    _ingest(client, other, [clip])

    assert _ids(client, reviewer, channel="usb") == [usb_critical["id"]]
    assert set(_ids(client, reviewer, channel="file,clipboard")) == {file_low["id"], clip["id"]}
    assert set(_ids(client, reviewer, vendor="acme-bpo")) == {usb_critical["id"], file_low["id"]}
    assert _ids(client, reviewer, agent=other.id) == [clip["id"]]
    assert _ids(client, reviewer, user="mallory") == [file_low["id"]]
    assert _ids(client, reviewer, rule="aws_key") == [clip["id"]]
    assert _ids(client, reviewer, severity="low") == [file_low["id"]]
    assert set(_ids(client, reviewer, min_severity="high")) == {usb_critical["id"], clip["id"]}
    assert _ids(client, reviewer, until="2026-11-21T00:00:00Z") == [file_low["id"]]
    assert file_low["id"] not in _ids(client, reviewer, since="2026-11-21T00:00:00Z")
    assert _ids(client, reviewer, sha256="ab" * 32) == [clip["id"]]
    assert _ids(client, reviewer, device="4C530001") == [usb_critical["id"]]
    assert _ids(client, reviewer, status="new", channel="usb") == [usb_critical["id"]]
    assert _ids(client, reviewer, vendor="nobody") == []


def test_keyset_paging_visits_every_event_once_even_while_new_ones_arrive(client, enroll, reviewer):
    agent = enroll()
    _ingest(client, agent, [event_record() for _ in range(25)])
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        body = client.get("/api/v1/events", params=params, headers=reviewer.headers).json()
        seen += [item["id"] for item in body["items"]]
        pages += 1
        if pages == 1:
            _ingest(client, agent, [event_record() for _ in range(5)])  # newer: not in this walk
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 25 and pages == 3
    assert client.get("/api/v1/events", params={"cursor": "bm9wZQ"}, headers=reviewer.headers).status_code == 422


def test_event_contract_fields(client, enroll, reviewer):
    agent = enroll()
    record = event_record()
    _ingest(client, agent, [record])
    (item,) = client.get("/api/v1/events", headers=reviewer.headers).json()["items"]
    for key in ("id", "agent_id", "channel", "type", "occurred_at", "received_at", "path", "sha256", "matches", "device"):
        assert key in item, key
    assert item["agent_id"] == agent.id and item["vendor"] == "acme-bpo"
    assert item["matches"][0]["rule"] == "private_key_pem" and item["matches"][0]["offsets"] == [0]
    assert {k: item["device"][k] for k in ("vendor", "model", "serial", "fstype", "mountpoint")} == {
        "vendor": "SanDisk", "model": "Ultra", "serial": "4C530001", "fstype": "exfat", "mountpoint": "/media/jdoe/STICK"}
    assert item["triage"] == {"status": "new", "assignee": None}


def test_triage_and_comments_are_kept_and_audited(client, enroll, reviewer, admin):
    agent = enroll()
    same_file = [event_record(), event_record()]
    _ingest(client, agent, same_file)
    event_id = same_file[0]["id"]
    response = client.patch(f"/api/v1/events/{event_id}/triage", json={"status": "confirmed_leak", "assignee": reviewer.name}, headers=reviewer.headers)
    assert response.status_code == 200
    assert response.json()["triage"] == {"status": "confirmed_leak", "assignee": reviewer.name}
    client.post(f"/api/v1/events/{event_id}/comments", json={"body": "HR informed; laptop collected"}, headers=reviewer.headers)
    detail = client.get(f"/api/v1/events/{event_id}", headers=reviewer.headers).json()
    assert [c["body"] for c in detail["comments"]] == ["HR informed; laptop collected"]
    assert detail["comments"][0]["author"] == reviewer.name
    assert detail["related"] == {"same_sha256": 1, "same_device": 1}
    assert _ids(client, reviewer, status="confirmed_leak") == [event_id]
    bulk = client.post("/api/v1/events/triage", json={"ids": [e["id"] for e in same_file], "status": "benign"}, headers=reviewer.headers)
    assert bulk.json()["updated"] == 2
    assert set(_ids(client, reviewer, status="benign")) == {e["id"] for e in same_file}

    audit = client.get("/api/v1/audit", headers=admin.headers).json()
    assert audit["chain"]["ok"] is True
    actions = [(entry["actor"], entry["action"], entry["target"]) for entry in audit["items"]]
    assert (reviewer.name, "event.triage", event_id) in actions and (reviewer.name, "event.comment", event_id) in actions
    assert actions[0][1] == "event.triage_bulk"
    triage = next(e for e in audit["items"] if e["action"] == "event.triage")
    assert triage["details"]["before"]["status"] == "new" and triage["details"]["after"]["status"] == "confirmed_leak"
    assert triage["address"] == "127.0.0.1"


def test_roles_reviewer_cannot_administer(client, reviewer, admin):
    assert client.post("/api/v1/enrollment-tokens", json={"vendor": "acme-bpo"}, headers=reviewer.headers).status_code == 403
    assert client.post("/api/v1/users", json={"name": "eve", "role": "admin"}, headers=reviewer.headers).status_code == 403
    assert client.get("/api/v1/audit", headers=reviewer.headers).status_code == 403
    assert client.get("/api/v1/events", headers=reviewer.headers).status_code == 200
    created = client.post("/api/v1/enrollment-tokens", json={"vendor": "acme-bpo", "uses": 5, "expires_in": "2d"}, headers=admin.headers)
    assert created.status_code == 201 and created.json()["token"].startswith("dlpe_")
    assert client.get("/api/v1/events").status_code == 401


def test_login_sessions_and_failed_login_limit(client, collector, admin):
    good = client.post("/api/v1/auth/login", json={"username": admin.name, "password": admin.password})
    assert good.status_code == 200
    session = {"Authorization": f"Bearer {good.json()['token']}"}
    assert client.get("/api/v1/auth/me", headers=session).json()["role"] == "admin"
    assert client.post("/api/v1/auth/logout", headers=session).status_code == 200
    assert client.get("/api/v1/auth/me", headers=session).status_code == 401

    limit = collector.settings.auth.failed_login_limit
    for _ in range(limit):
        assert client.post("/api/v1/auth/login", json={"username": admin.name, "password": "wrong"}).status_code == 401
    locked = client.post("/api/v1/auth/login", json={"username": admin.name, "password": admin.password})
    assert locked.status_code == 429
    assert client.post("/api/v1/auth/login", json={"username": "ghost", "password": "x"}).status_code == 401  # another name: not yet the address limit


def test_audit_chain_shows_a_removed_or_edited_entry(client, collector, admin):
    for name in ("v1", "v2", "v3", "v4"):
        assert client.post("/api/v1/vendors", json={"name": name}, headers=admin.headers).status_code == 201
    assert client.get("/api/v1/audit", headers=admin.headers).json()["chain"] == {"ok": True, "entries": 4, "problem": None}
    with collector.db.write() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(target="innocent"))
    assert client.get("/api/v1/audit", headers=admin.headers).json()["chain"]["problem"] == "entry 2 was altered"
    with collector.db.write() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == 2))
    assert client.get("/api/v1/audit", headers=admin.headers).json()["chain"]["problem"] == "entry 2 is missing"


def test_audit_chain_checked_from_a_later_entry_covers_that_span_only(client, collector, admin):
    for name in ("v1", "v2", "v3", "v4", "v5"):
        assert client.post("/api/v1/vendors", json={"name": name}, headers=admin.headers).status_code == 201
    with collector.db.write() as conn:
        assert audit.verify(conn, since=3) == audit.ChainCheck(True, 3)
        conn.execute(update(audit_log).where(audit_log.c.seq == 1).values(target="innocent"))
        assert audit.verify(conn, since=3).ok and audit.verify(conn).problem == "entry 1 was altered"
        conn.execute(update(audit_log).where(audit_log.c.seq == 4).values(target="innocent"))
        assert audit.verify(conn, since=3).problem == "entry 4 was altered"
        conn.execute(delete(audit_log).where(audit_log.c.seq == 5))
        assert audit.verify(conn, since=5).problem == "entry 5 is missing"
        assert audit.verify(conn, since=6) == audit.ChainCheck(False, 0, "entry 6 is missing")


def test_a_checkpoint_bounds_the_walk_and_still_catches_what_changed(client, collector, admin):
    for name in ("v1", "v2", "v3"):
        assert client.post("/api/v1/vendors", json={"name": name}, headers=admin.headers).status_code == 201
    with collector.db.read() as conn:
        assert audit.verify_span(conn, since=2) == audit.SpanCheck(audit.ChainCheck(True, 2), None)  # no checkpoint: walked from 2
    assert checkpoint_audit(collector).ok
    for name in ("v4", "v5"):
        assert client.post("/api/v1/vendors", json={"name": name}, headers=admin.headers).status_code == 201
    with collector.db.write() as conn:
        span = audit.verify_span(conn, since=2)
        assert span.check == audit.ChainCheck(True, 2) and span.checkpoint is not None and span.checkpoint["seq"] == 3  # only 4 and 5 walked
        assert audit.verify_span(conn, since=4).checkpoint is None  # the case began after the checkpoint
        conn.execute(update(audit_log).where(audit_log.c.seq == 5).values(target="innocent"))
        assert audit.verify_span(conn, since=2).check.problem == "entry 5 was altered"
        conn.execute(update(audit_log).where(audit_log.c.seq == 3).values(hash="0" * 64))
        assert audit.verify_span(conn, since=2).check.problem == "entry 3 changed after it was verified"


def test_audit_chain_shows_removed_newest_entries(client, collector, admin):
    for name in ("v1", "v2", "v3"):
        client.post("/api/v1/vendors", json={"name": name}, headers=admin.headers)
    with collector.db.write() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == 3))
    chain = client.get("/api/v1/audit", headers=admin.headers).json()["chain"]
    assert chain["ok"] is False and "removed" in chain["problem"]


def test_user_management_by_admin(client, collector, admin):
    created = client.post("/api/v1/users", json={"name": "rob", "role": "reviewer"}, headers=admin.headers)
    assert created.status_code == 201
    rob = created.json()
    assert client.get("/api/v1/events", headers={"Authorization": f"Bearer {rob['api_token']}"}).status_code == 200
    assert client.post("/api/v1/users", json={"name": "rob", "role": "admin"}, headers=admin.headers).status_code == 409
    names = [u["name"] for u in client.get("/api/v1/users", headers=admin.headers).json()["items"]]
    assert names == ["alice", "rob"]
    assert add_user(collector, "zed", "reviewer").name == "zed"
