"""Publishing signatures on the collector (SQLite and PostgreSQL): compile gate, roles, vendors, rollback, rollout."""

from __future__ import annotations

from agent.bundle import read_bundle

GOOD = 'rule quiet_word { meta: severity = "high" strings: $a = "HUMMINGBIRD-0042" condition: $a }'
ACME_ONLY = 'rule acme_repo { meta: severity = "critical" category = "source_code" strings: $a = "AcmeLedgerReconciler" condition: $a }'
BROKEN = 'rule broken { strings: $a = "x" condition: $b }'


def _fetch(client, agent, etag=None):
    headers = {**agent.headers, **({"If-None-Match": f'"{etag}"'} if etag else {})}
    return client.get("/api/v1/signatures", headers=headers)


def test_publish_fetch_verify_and_not_modified(client, collector, admin, enroll):
    agent = enroll()
    assert _fetch(client, agent).status_code == 404
    published = client.post("/api/v1/signatures", json={"packs": {"quiet": GOOD}, "note": "first"}, headers=admin.headers)
    assert published.status_code == 201 and published.json() == {"version": 1, "rules": 1}
    answer = _fetch(client, agent)
    assert answer.status_code == 200
    bundle = read_bundle(answer.content, public_key_hex=collector.signing_public_key, vendor="acme-bpo")
    assert bundle.version == 1 and bundle.packs == {"quiet": GOOD.encode()}
    etag = answer.headers["ETag"].strip('"')
    assert _fetch(client, agent, etag).status_code == 304


def test_a_rule_that_does_not_compile_is_never_published(client, admin):
    client.post("/api/v1/signatures", json={"packs": {"quiet": GOOD}}, headers=admin.headers)
    refused = client.post("/api/v1/signatures", json={"packs": {"broken": BROKEN}}, headers=admin.headers)
    assert refused.status_code == 422
    assert refused.json()["detail"] == 'not published: broken.yar:1: undefined string "$b"'
    versions = client.get("/api/v1/signatures/versions", headers=admin.headers).json()["items"]
    assert [v["version"] for v in versions] == [1]
    audit = client.get("/api/v1/audit", headers=admin.headers).json()["items"]
    assert [e["action"] for e in audit] == ["signatures.publish"]


def test_reviewer_cannot_publish_or_roll_back(client, admin, reviewer):
    assert client.post("/api/v1/signatures", json={"packs": {"quiet": GOOD}}, headers=reviewer.headers).status_code == 403
    client.post("/api/v1/signatures", json={"packs": {"quiet": GOOD}}, headers=admin.headers)
    assert client.post("/api/v1/signatures/rollback", json={"version": 1}, headers=reviewer.headers).status_code == 403
    assert client.get("/api/v1/signatures/versions", headers=reviewer.headers).status_code == 200


def test_vendor_packs_reach_only_that_vendors_agents(client, collector, admin, enroll):
    acme, globex = enroll(vendor="acme-bpo", hostname="a"), enroll(vendor="globex-it", hostname="g")
    client.post("/api/v1/signatures", json={"packs": {"quiet": GOOD}}, headers=admin.headers)
    client.post("/api/v1/signatures", json={"packs": {"acme": ACME_ONLY}, "vendors": ["acme-bpo"]}, headers=admin.headers)
    key = collector.signing_public_key
    assert set(read_bundle(_fetch(client, acme).content, public_key_hex=key, vendor="acme-bpo").packs) == {"quiet", "acme"}
    assert set(read_bundle(_fetch(client, globex).content, public_key_hex=key, vendor="globex-it").packs) == {"quiet"}


def test_rollback_publishes_old_content_as_a_new_version_and_rollout_is_counted(client, collector, admin, enroll):
    agent = enroll()
    client.post("/api/v1/signatures", json={"packs": {"quiet": GOOD}}, headers=admin.headers)
    client.post("/api/v1/signatures", json={"packs": {"acme": ACME_ONLY}}, headers=admin.headers)
    client.post("/api/v1/heartbeat", json={"agent_version": "0.1.0", "bundle_version": 2}, headers=agent.headers)
    rolled = client.post("/api/v1/signatures/rollback", json={"version": 1}, headers=admin.headers)
    assert rolled.status_code == 201 and rolled.json()["version"] == 3
    bundle = read_bundle(_fetch(client, agent).content, public_key_hex=collector.signing_public_key, vendor="acme-bpo", newer_than=2)
    assert bundle.version == 3 and set(bundle.packs) == {"quiet"}
    versions = {v["version"]: v for v in client.get("/api/v1/signatures/versions", headers=admin.headers).json()["items"]}
    assert versions[3]["current"] and versions[3]["rollback_of"] == 1 and versions[2]["agents"] == 1
    (listed,) = client.get("/api/v1/agents", headers=admin.headers).json()["items"]
    assert listed["bundle_version"] == 2
    assert client.post("/api/v1/signatures/rollback", json={"version": 99}, headers=admin.headers).status_code == 404


def test_removing_a_pack_and_bad_pack_names(client, admin):
    client.post("/api/v1/signatures", json={"packs": {"quiet": GOOD, "acme": ACME_ONLY}}, headers=admin.headers)
    removed = client.post("/api/v1/signatures", json={"remove": ["acme"]}, headers=admin.headers)
    assert removed.status_code == 201 and removed.json()["rules"] == 1
    assert client.post("/api/v1/signatures", json={"packs": {"../evil": GOOD}}, headers=admin.headers).status_code == 422
    assert client.post("/api/v1/signatures", json={"remove": ["nope"]}, headers=admin.headers).status_code == 404


def test_signature_versions_are_not_shown_to_scoped_accounts(client, collector, admin, enroll):
    """Versions name every vendor's packs and count the whole fleet's agents: a scoped reviewer or a vendor lead gets 403."""
    from tests.test_scope_events import _person

    enroll(vendor="acme-bpo", hostname="a")
    client.post("/api/v1/signatures", json={"packs": {"acme": ACME_ONLY}, "vendors": ["acme-bpo"]}, headers=admin.headers)
    lead = _person(collector, "lee", "vendor_lead", ("acme-bpo",))
    scoped = _person(collector, "sam", "reviewer", ("acme-bpo",))
    for person in (lead, scoped):
        answer = client.get("/api/v1/signatures/versions", headers=person.headers)
        assert answer.status_code == 403, answer.text
        assert "acme" not in answer.text
