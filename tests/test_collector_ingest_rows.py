"""Ingest's stored rows: each event's own sequence number, rule index and times, whatever the batch mixes."""

from __future__ import annotations

from tests.collector_env import event_record


def _ids_with_rule(client, admin, rule: str) -> list[str]:
    body = client.get("/api/v1/events", params={"rule": rule, "limit": 1000}, headers=admin.headers).json()
    return [item["id"] for item in body["items"]]


def _ruled(rule: str, **overrides) -> dict:
    record = event_record(**overrides)
    record["matches"] = [{**record["matches"][0], "rule": rule}, {**record["matches"][0], "rule": "shared_rule"}]
    return record


def test_a_batch_mixing_new_duplicate_and_conflicting_ids_indexes_only_the_new_events_each_under_its_own_rules(client, enroll, admin):
    mine, other = enroll(hostname="a"), enroll(hostname="b")
    stored = [_ruled(f"first_{n}") for n in range(3)]
    theirs = _ruled("theirs")
    assert client.post("/api/v1/events", json={"events": stored}, headers=mine.headers).json()["accepted"] == 3
    assert client.post("/api/v1/events", json={"events": [theirs]}, headers=other.headers).json()["accepted"] == 1
    fresh = [_ruled(f"fresh_{n}") for n in range(4)]
    # New events between retried ones, so the rows that go in are not a prefix of the batch.
    batch = [fresh[0], stored[0], fresh[1], {**theirs, "matches": [{**theirs["matches"][0], "rule": "forged"}]}, fresh[2], stored[2], fresh[3]]
    reply = client.post("/api/v1/events", json={"events": batch}, headers=mine.headers).json()
    assert reply["accepted"] == 4
    assert sorted(reply["duplicates"]) == sorted([stored[0]["id"], stored[2]["id"]])
    assert reply["conflicts"] == [theirs["id"]]
    for record in fresh:
        assert _ids_with_rule(client, admin, record["matches"][0]["rule"]) == [record["id"]]
    assert _ids_with_rule(client, admin, "forged") == []
    assert _ids_with_rule(client, admin, "theirs") == [theirs["id"]]
    assert sorted(_ids_with_rule(client, admin, "shared_rule")) == sorted(r["id"] for r in [*stored, theirs, *fresh])
    paths = {item["id"]: item["path"] for item in client.get("/api/v1/events", params={"limit": 1000}, headers=admin.headers).json()["items"]}
    assert all(paths[r["id"]] == r["path"] for r in fresh)


def test_a_full_batch_keeps_each_events_rules_across_the_stores_insert_chunks(client, enroll, admin, collector):
    agent = enroll()
    size = collector.settings.ingest.max_batch_events
    batch = [_ruled(f"rule_{n}", path=f"/media/jdoe/STICK/{n}.zip") for n in range(size)]
    reply = client.post("/api/v1/events", json={"events": batch}, headers=agent.headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["accepted"] == size
    for n in (0, 1, 498, 499, 500, 501, size - 2, size - 1):
        assert _ids_with_rule(client, admin, f"rule_{n}") == [batch[n]["id"]]


def test_an_event_at_a_whole_second_is_found_from_that_second_on(client, enroll, admin):
    # The store writes SQLite's times itself; a whole second must be stored as SQLAlchemy binds
    # the filter's bound (with its microseconds), or "since" that very second misses the event.
    agent = enroll()
    whole, fraction = event_record(occurred_at="2026-11-24T08:59:58Z"), event_record(occurred_at="2026-11-24T08:59:58.000001Z")
    assert client.post("/api/v1/events", json={"events": [whole, fraction]}, headers=agent.headers).json()["accepted"] == 2

    def ids(**params) -> list[str]:
        return sorted(i["id"] for i in client.get("/api/v1/events", params=params, headers=admin.headers).json()["items"])

    assert ids(since="2026-11-24T08:59:58Z") == sorted([whole["id"], fraction["id"]])
    assert ids(since="2026-11-24T08:59:58.000001Z") == [fraction["id"]]
    assert ids(until="2026-11-24T08:59:58.000001Z") == [whole["id"]]
    assert ids(until="2026-11-24T08:59:58Z") == []
