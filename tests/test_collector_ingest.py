"""Ingest contract: authenticated, validated, idempotent, atomic; on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
import json

from tests.collector_env import event_record


def _count(client, admin, **params) -> int:
    total, cursor = 0, None
    while True:
        query = {"limit": 1000, **params, **({"cursor": cursor} if cursor else {})}
        body = client.get("/api/v1/events", params=query, headers=admin.headers).json()
        total += len(body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            return total


def test_batch_is_stored_once_and_retries_are_reported_as_duplicates(client, enroll, admin):
    agent = enroll()
    batch = [event_record() for _ in range(100)]
    first = client.post("/api/v1/events", json={"events": batch}, headers=agent.headers)
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": 100, "duplicates": [], "conflicts": []}
    again = client.post("/api/v1/events", json={"events": batch}, headers=agent.headers)
    assert again.json()["accepted"] == 0
    assert sorted(again.json()["duplicates"]) == sorted(e["id"] for e in batch)
    assert _count(client, admin, channel="usb") == 100


def test_gzip_body_is_accepted(client, enroll, admin):
    agent = enroll()
    body = gzip.compress(json.dumps({"events": [event_record()]}).encode())
    response = client.post("/api/v1/events", content=body, headers={**agent.headers, "Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1


def test_one_bad_event_rejects_the_whole_batch_with_reasons(client, enroll, admin):
    agent = enroll()
    batch = [event_record() for _ in range(5)]
    batch[3]["channel"] = "carrier-pigeon"
    response = client.post("/api/v1/events", json={"events": batch}, headers=agent.headers)
    assert response.status_code == 422
    locs = [problem["loc"] for problem in response.json()["detail"]]
    assert ["body", "events", 3, "channel"] in locs
    assert _count(client, admin) == 0


def test_an_agent_cannot_submit_as_another(client, enroll, admin):
    mine, other = enroll(hostname="a"), enroll(hostname="b")
    response = client.post("/api/v1/events", json={"events": [event_record(agent_id=other.id)]}, headers=mine.headers)
    assert response.status_code == 403
    assert _count(client, admin) == 0


def test_an_id_used_by_another_agent_is_a_conflict_not_a_duplicate(client, enroll, admin):
    first, second = enroll(hostname="a"), enroll(hostname="b")
    record = event_record()
    assert client.post("/api/v1/events", json={"events": [record]}, headers=first.headers).json()["accepted"] == 1
    response = client.post("/api/v1/events", json={"events": [record, event_record()]}, headers=second.headers).json()
    assert response["conflicts"] == [record["id"]] and response["accepted"] == 1
    items = client.get("/api/v1/events", params={"agent": first.id}, headers=admin.headers).json()["items"]
    assert [item["id"] for item in items] == [record["id"]]


def test_unauthenticated_and_forged_credentials_are_refused(client, enroll):
    agent = enroll()
    batch = {"events": [event_record()]}
    assert client.post("/api/v1/events", json=batch).status_code == 401
    forged = agent.credential[:-4] + "AAAA"
    assert client.post("/api/v1/events", json=batch, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert client.post("/api/v1/events", json=batch, headers={"Authorization": "Bearer dlpa_nothex_x"}).status_code == 401


def test_oversized_batches_and_bodies_get_413(client, enroll, collector):
    agent = enroll()
    limit = collector.settings.ingest.max_batch_events
    too_many = {"events": [event_record() for _ in range(limit + 1)]}
    assert client.post("/api/v1/events", json=too_many, headers=agent.headers).status_code == 413
    bomb = gzip.compress(b'{"events": [' + b" " * (collector.settings.ingest.max_decoded_bytes + 10) + b"]}")
    response = client.post("/api/v1/events", content=bomb, headers={**agent.headers, "Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert response.status_code == 413
    huge = b"x" * (collector.settings.ingest.max_body_bytes + 1)
    assert client.post("/api/v1/events", content=huge, headers={**agent.headers, "Content-Type": "application/json"}).status_code == 413


def test_corrupt_gzip_and_malformed_json_are_400_and_422(client, enroll):
    agent = enroll()
    corrupt = client.post("/api/v1/events", content=b"\x1f\x8b\x08garbage", headers={**agent.headers, "Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert corrupt.status_code == 400
    malformed = client.post("/api/v1/events", content=b'{"events": [', headers={**agent.headers, "Content-Type": "application/json"})
    assert malformed.status_code == 422


def test_revoked_agent_is_refused(client, enroll, admin):
    agent = enroll()
    assert client.post(f"/api/v1/agents/{agent.id}/revoke", headers=admin.headers).status_code == 200
    response = client.post("/api/v1/events", json={"events": [event_record()]}, headers=agent.headers)
    assert response.status_code == 403
    assert "revoked" in response.json()["detail"]
    assert client.post("/api/v1/heartbeat", json={"agent_version": "0.1.0"}, headers=agent.headers).status_code == 403


def test_nul_and_unicode_junk_is_stored_verbatim_without_errors(client, enroll, admin):
    agent = enroll()
    record = event_record(path="/media/\x00evil\u202e\U0001f600/\ufffe.zip", user="r\u00f6\u00f6t\x00")
    assert client.post("/api/v1/events", json={"events": [record]}, headers=agent.headers).status_code == 200
    stored = client.get(f"/api/v1/events/{record['id']}", headers=admin.headers).json()
    assert stored["path"] == record["path"]
