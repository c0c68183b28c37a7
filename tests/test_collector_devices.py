"""USB device control on the collector (SQLite and PostgreSQL): per-vendor policies, exceptions, the signed document, roles, CLI and UI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from server.db.tables import audit_log
from server.keys import QUARANTINE_KEY_FILE, public_key_hex, quarantine_key
from tests.test_ui_views import _log_in

POLICY = {
    "action": "block",
    "allowed": [{"vendor_id": "0781", "product_id": "55A9", "serial": "4C53*", "note": "IT sticks"}, {"vendor_id": "090c"}],
}


def _vendor_policy(client: Any, admin: Any, vendor: str = "acme-bpo", body: dict[str, Any] | None = None) -> Any:
    return client.put(f"/api/v1/vendors/{vendor}/device-policy", json=body or POLICY, headers=admin.headers)


def _fetch(client: Any, agent: Any, etag: str | None = None) -> Any:
    headers = {**agent.headers, **({"If-None-Match": etag} if etag else {})}
    return client.get("/api/v1/agent/device-policy", headers=headers)


def _document(collector: Any, answer: Any) -> dict[str, Any]:
    """The policy document of a 200 answer, after checking its signature as an agent does."""
    body = answer.json()
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(collector.signing_public_key)).verify(bytes.fromhex(body["signature"]), body["document"].encode("utf-8"))
    return json.loads(body["document"])


def _audit(collector: Any) -> list[Any]:
    with collector.db.read() as conn:
        return conn.execute(select(audit_log).order_by(audit_log.c.seq)).all()


def _grant(client: Any, admin: Any, vendor: str = "acme-bpo", **body: Any) -> Any:
    payload = {"vendor_id": "1234", "product_id": "abcd", "serial": "SN-1", "duration": "4h", "reason": "migration weekend", **body}
    return client.post(f"/api/v1/vendors/{vendor}/device-exceptions", json=payload, headers=admin.headers)


def test_policy_set_get_and_every_change_bumps_the_version_and_is_audited(client, collector, admin, reviewer, enroll):
    enroll()
    assert client.get("/api/v1/vendors/acme-bpo/device-policy", headers=admin.headers).json() == {"detail": "no device policy"}
    first = _vendor_policy(client, admin)
    assert first.status_code == 200, first.text
    policy = first.json()
    assert (policy["vendor"], policy["version"], policy["action"], policy["updated_by"]) == ("acme-bpo", 1, "block", admin.name)
    assert policy["allowed"] == [
        {"vendor_id": "0781", "product_id": "55a9", "serial": "4C53*", "note": "IT sticks"},
        {"vendor_id": "090c", "product_id": "*", "serial": "*", "note": ""},
    ], "ids are stored lower-case and missing fields mean any"
    assert _vendor_policy(client, admin, body={"action": "read-only", "allowed": []}).json()["version"] == 2
    granted = _grant(client, admin)
    assert granted.status_code == 201, granted.text
    exception = granted.json()
    assert exception == {"id": exception["id"], "vendor_id": "1234", "product_id": "abcd", "serial": "SN-1", "expires_at": "2026-11-24T13:00:00.000Z",
                         "reason": "migration weekend", "granted_by": admin.name}  # fmt: skip
    read = client.get("/api/v1/vendors/acme-bpo/device-policy", headers=reviewer.headers).json()
    assert (read["version"], read["action"], read["exceptions"]) == (3, "read-only", [exception])
    revoked = client.delete(f"/api/v1/vendors/acme-bpo/device-exceptions/{exception['id']}", headers=admin.headers)
    assert revoked.status_code == 200 and revoked.json()["version"] == 4
    assert client.get("/api/v1/vendors/acme-bpo/device-policy", headers=admin.headers).json()["exceptions"] == []
    assert client.delete(f"/api/v1/vendors/acme-bpo/device-exceptions/{exception['id']}", headers=admin.headers).status_code == 404
    entries = [(row.actor, row.action, row.target, json.loads(row.details).get("version")) for row in _audit(collector)]
    assert entries == [
        (admin.name, "device_policy.set", "acme-bpo", 1),
        (admin.name, "device_policy.set", "acme-bpo", 2),
        (admin.name, "device_exception.grant", "acme-bpo", 3),
        (admin.name, "device_exception.revoke", "acme-bpo", 4),
    ]
    assert json.loads(_audit(collector)[2].details)["reason"] == "migration weekend"


def test_the_agent_gets_its_vendors_signed_document_with_the_quarantine_key_and_etags(client, collector, admin, enroll):
    acme, globex = enroll(vendor="acme-bpo", hostname="a"), enroll(vendor="globex-it", hostname="g")
    missing = _fetch(client, acme)
    assert missing.status_code == 404 and missing.json() == {"detail": "no device policy"}
    beat = client.post("/api/v1/heartbeat", json={"agent_version": "0.1.0"}, headers=acme.headers).json()
    assert beat["device_policy_version"] is None and beat["commands"] == []
    _vendor_policy(client, admin)
    answer = _fetch(client, acme)
    assert answer.status_code == 200, answer.text
    document = _document(collector, answer)
    key_file = collector.settings.data_dir / QUARANTINE_KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert document == {
        "format": 1, "vendor": "acme-bpo", "version": 1, "issued_at": "2026-11-24T09:00:00.000Z", "action": "block",
        "allowed": [{"vendor_id": "0781", "product_id": "55a9", "serial": "4C53*", "note": "IT sticks"}, {"vendor_id": "090c", "product_id": "*", "serial": "*", "note": ""}],
        "exceptions": [], "quarantine_key": public_key_hex(quarantine_key(collector.settings.data_dir)),
    }  # fmt: skip
    etag = answer.headers["ETag"]
    assert _fetch(client, acme, etag).status_code == 304
    assert _fetch(client, globex).status_code == 404, "another vendor's policy is not this vendor's"
    assert client.post("/api/v1/heartbeat", json={"agent_version": "0.1.0"}, headers=globex.headers).json()["device_policy_version"] is None
    _grant(client, admin)
    assert client.post("/api/v1/heartbeat", json={"agent_version": "0.1.0"}, headers=acme.headers).json()["device_policy_version"] == 2
    changed = _fetch(client, acme, etag)
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert _document(collector, changed)["version"] == 2 and _document(collector, changed)["quarantine_key"] == document["quarantine_key"]
    signed = changed.json()
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(collector.signing_public_key)).verify(
            bytes.fromhex(signed["signature"]), signed["document"].replace('"block"', '"audit"').encode()
        )
    assert client.get("/api/v1/agent/device-policy", headers=admin.headers).status_code == 401, "a user token is not an agent credential"


def test_exceptions_expire_out_of_the_document_and_revoked_ones_disappear(client, collector, clock, admin, enroll):
    agent = enroll()
    _vendor_policy(client, admin)
    short = _grant(client, admin, serial="SHORT", duration="1h").json()
    long = _grant(client, admin, serial="LONG", duration="4h").json()
    assert [e["serial"] for e in _document(collector, _fetch(client, agent))["exceptions"]] == ["SHORT", "LONG"]
    clock.advance(hours=2)
    document = _document(collector, _fetch(client, agent))
    assert [e["id"] for e in document["exceptions"]] == [long["id"]] and document["version"] == 3
    assert client.get("/api/v1/vendors/acme-bpo/device-policy", headers=admin.headers).json()["exceptions"] == [long]
    assert client.delete(f"/api/v1/vendors/acme-bpo/device-exceptions/{short['id']}", headers=admin.headers).status_code == 200, "an expired one may still be revoked"
    client.delete(f"/api/v1/vendors/acme-bpo/device-exceptions/{long['id']}", headers=admin.headers)
    document = _document(collector, _fetch(client, agent))
    assert document["exceptions"] == [] and document["version"] == 5


def test_bad_patterns_durations_and_vendors_are_refused_clearly(client, admin, enroll):
    enroll()
    refused = [
        {"action": "lock", "allowed": []},
        {"action": "block", "allowed": [{"vendor_id": "07811"}]},
        {"action": "block", "allowed": [{"vendor_id": "zz12"}]},
        {"action": "block", "allowed": [{"vendor_id": "078"}]},
        {"action": "block", "allowed": [{"serial": "SN\x1b[2J"}]},
        {"action": "block", "allowed": [{"serial": "x" * 129}]},
        {"action": "block", "allowed": [{"vendor_id": "0781"}] * 257},
        {"action": "block", "allowed": [{"vendor_id": "0781", "colour": "red"}]},
    ]
    for body in refused:
        assert _vendor_policy(client, admin, body=body).status_code == 422, body
    assert _grant(client, admin).status_code == 409, "an exception needs a policy to belong to"
    assert _vendor_policy(client, admin, body={"action": "block", "allowed": [{"vendor_id": "07*", "product_id": "??a?"}]}).status_code == 200
    assert _grant(client, admin, duration="91d").json() == {"detail": "an exception lasts at most 90 days"}
    assert _grant(client, admin, duration="soon").status_code == 422
    assert _grant(client, admin, reason="").status_code == 422
    assert _grant(client, admin, reason="   ").status_code == 422
    assert _grant(client, admin, vendor_id="*", product_id="", serial="*").json() == {"detail": "an exception is for one device: give its vendor_id, product_id or serial"}
    assert _vendor_policy(client, admin, vendor="nobody").json() == {"detail": "no vendor 'nobody'"}
    assert client.get("/api/v1/vendors/acme-bpo/device-policy", headers=admin.headers).json()["version"] == 1


def test_only_admins_change_policies_and_reviewers_read_them(client, admin, reviewer, enroll):
    agent = enroll()
    assert _vendor_policy(client, reviewer).status_code == 403
    _vendor_policy(client, admin)
    assert client.get("/api/v1/vendors/acme-bpo/device-policy", headers=reviewer.headers).status_code == 200
    assert _grant(client, reviewer).status_code == 403
    exception = _grant(client, admin).json()
    assert client.delete(f"/api/v1/vendors/acme-bpo/device-exceptions/{exception['id']}", headers=reviewer.headers).status_code == 403
    assert client.get("/api/v1/vendors/acme-bpo/device-policy", headers=agent.headers).status_code == 401, "an agent credential is not a user's"
    assert client.get("/api/v1/vendors/acme-bpo/device-policy").status_code == 401


def _dlp_server(*args: str, collector: Any) -> subprocess.CompletedProcess:
    env = {**os.environ, "DLP_DATABASE_URL": collector.settings.effective_database_url}
    return subprocess.run([sys.executable, "-m", "server.cli", *args, "--data-dir", str(collector.settings.data_dir)], capture_output=True, text=True, env=env, timeout=120)


def test_cli_sets_shows_excepts_and_revokes_as_the_local_operator(client, collector, enroll):
    agent = enroll()
    done = _dlp_server("devices", "set", "--vendor", "acme-bpo", "--action", "read-only", "--allow", "0781:55a9:4C53* # IT sticks", "--allow", "090c", collector=collector)
    assert done.returncode == 0, done.stderr
    excepted = _dlp_server("devices", "except", "--vendor", "acme-bpo", "--device", "1234:abcd:SN:with:colons", "--for", "2h", "--reason", "audit visit", "--json", collector=collector)
    assert excepted.returncode == 0, excepted.stderr
    exception = json.loads(excepted.stdout)
    assert (exception["serial"], exception["reason"]) == ("SN:with:colons", "audit visit")
    shown = json.loads(_dlp_server("devices", "show", "--vendor", "acme-bpo", "--json", collector=collector).stdout)
    assert (shown["version"], shown["action"], len(shown["allowed"]), shown["exceptions"]) == (2, "read-only", 2, [exception])
    assert shown["allowed"][0] == {"vendor_id": "0781", "product_id": "55a9", "serial": "4C53*", "note": "IT sticks"}
    text = _dlp_server("devices", "show", "--vendor", "acme-bpo", collector=collector).stdout
    assert "read-only" in text and "0781:55a9:4C53*" in text and "audit visit" in text
    assert _dlp_server("devices", "revoke", "--vendor", "acme-bpo", str(exception["id"]), collector=collector).returncode == 0
    assert _document(collector, _fetch(client, agent))["version"] == 3
    bad = _dlp_server("devices", "set", "--vendor", "acme-bpo", "--action", "read-only", "--allow", "12345", collector=collector)
    assert bad.returncode == 1 and "vendor_id '12345' must be 4 hex digits" in bad.stderr
    missing = _dlp_server("devices", "show", "--vendor", "globex-it", collector=collector)
    assert missing.returncode == 1 and "no vendor 'globex-it'" in missing.stderr
    actors = {(row.actor.split(":")[0], row.action) for row in _audit(collector)}
    assert actors == {("cli", "device_policy.set"), ("cli", "device_exception.grant"), ("cli", "device_exception.revoke")}


def test_devices_page_sets_the_policy_grants_and_revokes_for_admins_only(client, collector, admin, reviewer, enroll):
    enroll()
    csrf = _log_in(client, reviewer)
    assert 'href="/ui/devices"' not in client.get("/ui/events").text
    assert client.get("/ui/devices").status_code == 403
    assert client.post("/ui/devices/policy", data={"csrf": csrf, "vendor": "acme-bpo", "action": "block", "allowed": ""}).status_code == 403
    csrf = _log_in(client, admin)
    assert 'href="/ui/devices"' in client.get("/ui/events").text
    page = client.get("/ui/devices?vendor=acme-bpo")
    assert page.status_code == 200 and "No device policy yet" in page.text and 'name="reason"' not in page.text
    assert client.post("/ui/devices/policy", data={"csrf": "forged", "vendor": "acme-bpo", "action": "block", "allowed": ""}).status_code == 403
    set_it = client.post("/ui/devices/policy", data={"csrf": csrf, "vendor": "acme-bpo", "action": "block", "allowed": "0781:55a9:* # IT sticks\n\n090c"}, follow_redirects=False)
    assert set_it.status_code == 303 and set_it.headers["location"] == "/ui/devices?vendor=acme-bpo&notice=policy"
    page = client.get(set_it.headers["location"]).text
    assert "Version 1" in page and "0781:55a9:* # IT sticks" in page and 'value="block" checked' in page
    bad = client.post("/ui/devices/policy", data={"csrf": csrf, "vendor": "acme-bpo", "action": "block", "allowed": "nothex"})
    assert bad.status_code == 422 and "must be 4 hex digits" in bad.text and "nothex" in bad.text, "the typed list is kept for fixing"
    form = {"csrf": csrf, "vendor": "acme-bpo", "vendor_id": "1234", "product_id": "abcd", "serial": "SN-9", "duration": "4h", "reason": "firmware update"}
    granted = client.post("/ui/devices/exceptions", data=form, follow_redirects=False)
    assert granted.status_code == 303, granted.text
    page = client.get(granted.headers["location"]).text
    assert "firmware update" in page and "SN-9" in page and "2026-11-24 13:00:00" in page
    exception_id = re.search(r'action="/ui/devices/exceptions/(\d+)/revoke"', page).group(1)
    revoked = client.post(f"/ui/devices/exceptions/{exception_id}/revoke", data={"csrf": csrf, "vendor": "acme-bpo"}, follow_redirects=False)
    assert revoked.status_code == 303 and "firmware update" not in client.get(revoked.headers["location"]).text
    policy = client.get("/api/v1/vendors/acme-bpo/device-policy", headers=admin.headers).json()
    assert (policy["version"], policy["action"], [a["vendor_id"] for a in policy["allowed"]], policy["exceptions"]) == (3, "block", ["0781", "090c"], [])
    assert [row.action for row in _audit(collector) if row.action.startswith("device_")] == ["device_policy.set", "device_exception.grant", "device_exception.revoke"]
