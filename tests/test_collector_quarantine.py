"""Quarantined files on the collector (SQLite and PostgreSQL): recorded at ingest, released or deleted
through commands in heartbeats that only the owning agent's report completes, with a key that decrypts."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select

from server.db.tables import audit_log
from tests.collector_env import event_record
from tests.test_ui_views import _log_in

CHUNK = 1 << 20
SECRET = b"PROPRIETARY AND CONFIDENTIAL ledger\n" * 80_000  # about 2.8 MiB: three chunks


class Sealed:
    """A file encrypted as the agent quarantines it (docs/device-control.md), by a test-side encryptor:
    X25519 with an ephemeral key, HKDF-SHA256 to the data key, AES-256-GCM in 1 MiB chunks."""

    def __init__(self, collector_public_hex: str, data: bytes, quarantine_id: str | None = None) -> None:
        self.id = quarantine_id or str(uuid.uuid4())
        ephemeral = X25519PrivateKey.generate()
        self.ephemeral_key = ephemeral.public_key().public_bytes_raw().hex()
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(bytes.fromhex(collector_public_hex)))
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"dlp-quarantine-v1:" + self.id.encode("ascii")).derive(shared)
        self.prefix = os.urandom(4)
        pieces = [data[start : start + CHUNK] for start in range(0, len(data), CHUNK)]
        self.chunks = [AESGCM(key).encrypt(self._nonce(i), piece, self._aad(i, i == len(pieces) - 1)) for i, piece in enumerate(pieces)]
        self.size, self.sha256 = len(data), hashlib.sha256(data).hexdigest()

    def _nonce(self, index: int) -> bytes:
        return self.prefix + index.to_bytes(8, "big")

    def _aad(self, index: int, final: bool) -> bytes:
        return self.id.encode("ascii") + index.to_bytes(8, "big") + bytes([final])

    def open(self, key_hex: str) -> bytes:
        aes = AESGCM(bytes.fromhex(key_hex))
        return b"".join(aes.decrypt(self._nonce(i), chunk, self._aad(i, i == len(self.chunks) - 1)) for i, chunk in enumerate(self.chunks))


def _collector_key(client: Any, admin: Any, agent: Any) -> str:
    """The quarantine key as agents learn it: from the vendor's signed policy document."""
    client.put(f"/api/v1/vendors/{agent.vendor}/device-policy", json={"action": "block", "allowed": []}, headers=admin.headers)
    answer = client.get("/api/v1/agent/device-policy", headers=agent.headers)
    assert answer.status_code == 200, answer.text
    return json.loads(answer.json()["document"])["quarantine_key"]


def _ingest(client: Any, agent: Any, *records: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/api/v1/events", json={"events": list(records)}, headers=agent.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _quarantined(sealed: Sealed, *, path: str = "/media/jdoe/STICK/ledger.txt", done: bool = True, **quarantine: Any) -> dict[str, Any]:
    facts = {"id": sealed.id, "ephemeral_key": sealed.ephemeral_key, "original_path": path, "size": sealed.size, "sha256": sealed.sha256, **quarantine}
    enforcement = {"action": "quarantine", "mode": "enforce", "done": done, "detail": None if done else "no device policy: no quarantine key", "quarantine": facts}
    return event_record(path=path, sha256=sealed.sha256, size=sealed.size, enforcement=enforcement)


def _report(quarantine_id: str, command: int, *, op: str = "release", done: bool = True, detail: str | None = None, path: str = "/media/jdoe/STICK/ledger.txt") -> dict[str, Any]:
    kind = {"release": "quarantine.released", "delete": "quarantine.deleted"}[op]
    enforcement = {"action": op, "mode": "enforce", "done": done, "detail": detail, "command": command, "quarantine": {"id": quarantine_id}}
    return event_record(type=kind, channel="usb", path=path, matches=[], severity=None, status=None, enforcement=enforcement)


def _commands(client: Any, agent: Any) -> list[dict[str, Any]]:
    answer = client.post("/api/v1/heartbeat", json={"agent_version": "0.1.0"}, headers=agent.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["commands"]


def _items(client: Any, admin: Any, **query: str) -> list[dict[str, Any]]:
    answer = client.get("/api/v1/quarantine", params=query, headers=admin.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def _audit(collector: Any) -> list[Any]:
    with collector.db.read() as conn:
        return conn.execute(select(audit_log).order_by(audit_log.c.seq)).all()


def test_a_quarantine_event_records_an_item_for_its_agent_only(client, admin, reviewer, enroll):
    owner, other = enroll(hostname="ws-1"), enroll(hostname="ws-2")
    key = _collector_key(client, admin, owner)
    sealed = Sealed(key, SECRET)
    event = _quarantined(sealed)
    _ingest(client, owner, event)
    (item,) = _items(client, admin)
    assert item == {
        "quarantine_id": sealed.id, "agent_id": owner.id, "hostname": "ws-1", "vendor": "acme-bpo", "event_id": event["id"],
        "original_path": "/media/jdoe/STICK/ledger.txt", "size": sealed.size, "sha256": sealed.sha256, "state": "held", "detail": None,
        "created_at": "2026-11-24T09:00:00.000Z", "updated_at": "2026-11-24T09:00:00.000Z",
    }  # fmt: skip
    assert _ingest(client, owner, event)["duplicates"] == [event["id"]]
    _ingest(client, other, _quarantined(sealed, path="/media/mallory/evil.txt"))
    _ingest(client, owner, _quarantined(Sealed(key, b"x"), done=False))
    bare = _quarantined(Sealed(key, b"y"))
    del bare["enforcement"]["quarantine"]["ephemeral_key"]
    _ingest(client, owner, bare)
    assert [(i["quarantine_id"], i["agent_id"], i["original_path"]) for i in _items(client, admin)] == [(sealed.id, owner.id, "/media/jdoe/STICK/ledger.txt")], (
        "another agent's claim on the id, an undone quarantine and one without its key are not recorded"
    )
    assert _items(client, admin, vendor="globex-it") == [] and _items(client, admin, agent=other.id) == [] and _items(client, admin, state="released") == []
    assert len(_items(client, admin, vendor="acme-bpo", agent=owner.id, state="held")) == 1
    assert client.get("/api/v1/quarantine", headers=reviewer.headers).status_code == 403
    assert client.get("/api/v1/quarantine", params={"state": "gone"}, headers=admin.headers).status_code == 422


def test_release_sends_a_key_that_decrypts_until_the_owning_agent_reports_it(client, collector, admin, enroll, caplog):
    caplog.set_level(logging.DEBUG)
    owner, other = enroll(hostname="ws-1"), enroll(hostname="ws-2")
    sealed = Sealed(_collector_key(client, admin, owner), SECRET)
    _ingest(client, owner, _quarantined(sealed))
    assert client.post(f"/api/v1/quarantine/{sealed.id}/release", headers=owner.headers).status_code == 401
    queued = client.post(f"/api/v1/quarantine/{sealed.id}/release", headers=admin.headers)
    assert queued.status_code == 202, queued.text
    command = queued.json()
    assert command == {"command": command["command"], "op": "release", "quarantine_id": sealed.id, "agent_id": owner.id, "state": "release_requested"}
    (sent,) = _commands(client, owner)
    assert (sent["id"], sent["op"], sent["quarantine_id"]) == (command["command"], "release", sealed.id)
    assert sealed.open(sent["key"]) == SECRET, "the key derived by the collector opens what the agent sealed"
    assert _commands(client, owner) == [sent], "sent again until reported"
    assert _commands(client, other) == []
    _ingest(client, other, _report(sealed.id, sent["id"], path="/tmp/stolen"))
    _ingest(client, owner, _report(sealed.id, sent["id"] + 1))
    assert _commands(client, owner) == [sent] and _items(client, admin)[0]["state"] == "release_requested", "neither another agent nor another command completes it"
    _ingest(client, owner, _report(sealed.id, sent["id"], path="/media/jdoe/STICK/ledger.txt"))
    assert _commands(client, owner) == []
    (item,) = _items(client, admin)
    assert (item["state"], item["detail"]) == ("released", "/media/jdoe/STICK/ledger.txt")
    again = client.post(f"/api/v1/quarantine/{sealed.id}/release", headers=admin.headers)
    assert again.status_code == 409 and again.json() == {"detail": f"{sealed.id} is released; only a held or failed file can be released or deleted"}
    (entry,) = [row for row in _audit(collector) if row.action.startswith("quarantine.")]
    assert (entry.actor, entry.action, entry.target) == (admin.name, "quarantine.release", sealed.id)
    assert json.loads(entry.details) == {"command": sent["id"], "agent_id": owner.id, "original_path": "/media/jdoe/STICK/ledger.txt", "sha256": sealed.sha256}
    assert sent["key"] not in caplog.text and all(sent["key"] not in row.details for row in _audit(collector))


def test_delete_that_fails_is_shown_with_the_agents_reason_and_may_be_asked_again(client, collector, admin, enroll):
    agent = enroll()
    sealed = Sealed(_collector_key(client, admin, agent), b"secret")
    _ingest(client, agent, _quarantined(sealed))
    assert client.post(f"/api/v1/quarantine/{sealed.id.upper()}/delete", headers=admin.headers).status_code == 202
    assert client.post(f"/api/v1/quarantine/{sealed.id}/release", headers=admin.headers).status_code == 409, "one command at a time"
    (sent,) = _commands(client, agent)
    assert sent == {"id": sent["id"], "op": "delete", "quarantine_id": sealed.id}, "a delete carries no key"
    _ingest(client, agent, _report(sealed.id, sent["id"], op="release"))
    assert _commands(client, agent) == [sent], "a report of another operation does not complete it"
    _ingest(client, agent, _report(sealed.id, sent["id"], op="delete", done=False, detail="quarantine folder is read-only"))
    (item,) = _items(client, admin)
    assert (item["state"], item["detail"]) == ("failed", "quarantine folder is read-only") and _commands(client, agent) == []
    retried = client.post(f"/api/v1/quarantine/{sealed.id}/delete", headers=admin.headers).json()
    assert retried["command"] > sent["id"] and [c["id"] for c in _commands(client, agent)] == [retried["command"]]
    _ingest(client, agent, _report(sealed.id, retried["command"], op="delete", path="/var/lib/dlp-agent/quarantine/x.dlpq"))
    assert _items(client, admin)[0]["state"] == "deleted"
    assert [row.action for row in _audit(collector) if row.action.startswith("quarantine.")] == ["quarantine.delete", "quarantine.delete"]
    assert client.post(f"/api/v1/quarantine/{uuid.uuid4()}/delete", headers=admin.headers).status_code == 404


def test_a_revoked_agent_takes_no_commands(client, admin, enroll):
    agent = enroll()
    sealed = Sealed(_collector_key(client, admin, agent), b"secret")
    _ingest(client, agent, _quarantined(sealed))
    client.post(f"/api/v1/agents/{agent.id}/revoke", headers=admin.headers)
    refused = client.post(f"/api/v1/quarantine/{sealed.id}/release", headers=admin.headers)
    assert refused.status_code == 409 and "revoked" in refused.json()["detail"]
    assert _items(client, admin)[0]["state"] == "held"


def test_a_release_that_cannot_be_keyed_fails_once_instead_of_in_every_heartbeat(client, admin, enroll):
    agent = enroll()
    sealed = Sealed(_collector_key(client, admin, agent), b"secret")
    sealed.ephemeral_key = "00" * 32  # a low-order point: X25519 gives no shared secret with it
    _ingest(client, agent, _quarantined(sealed))
    assert client.post(f"/api/v1/quarantine/{sealed.id}/release", headers=admin.headers).status_code == 202
    assert _commands(client, agent) == []
    (item,) = _items(client, admin)
    assert item["state"] == "failed" and "cannot be released, only deleted" in item["detail"]
    assert client.post(f"/api/v1/quarantine/{sealed.id}/delete", headers=admin.headers).status_code == 202
    assert [c["op"] for c in _commands(client, agent)] == ["delete"]


def _dlp_server(*args: str, collector: Any) -> subprocess.CompletedProcess:
    env = {**os.environ, "DLP_DATABASE_URL": collector.settings.effective_database_url}
    return subprocess.run([sys.executable, "-m", "server.cli", *args, "--data-dir", str(collector.settings.data_dir)], capture_output=True, text=True, env=env, timeout=120)


def test_cli_lists_releases_and_deletes(client, collector, admin, enroll):
    agent = enroll()
    key = _collector_key(client, admin, agent)
    first, second = Sealed(key, SECRET), Sealed(key, b"other")
    _ingest(client, agent, _quarantined(first), _quarantined(second, path="/media/jdoe/STICK/b.txt"))
    listed = _dlp_server("quarantine", "list", "--vendor", "acme-bpo", "--json", collector=collector)
    assert listed.returncode == 0, listed.stderr
    assert {i["quarantine_id"] for i in json.loads(listed.stdout)["items"]} == {first.id, second.id}
    released = _dlp_server("quarantine", "release", first.id, collector=collector)
    assert released.returncode == 0 and f"release of {first.id} queued as command" in released.stdout, released.stderr
    assert _dlp_server("quarantine", "delete", second.id, "--json", collector=collector).returncode == 0
    commands = {c["quarantine_id"]: c for c in _commands(client, agent)}
    assert first.open(commands[first.id]["key"]) == SECRET and commands[second.id]["op"] == "delete"
    text = _dlp_server("quarantine", "list", "--state", "release_requested", collector=collector).stdout
    assert first.id in text and second.id not in text and "/media/jdoe/STICK/ledger.txt" in text
    assert _dlp_server("quarantine", "list", "--state", "nope", collector=collector).returncode == 1
    refused = _dlp_server("quarantine", "release", first.id, collector=collector)
    assert refused.returncode == 1 and "release requested" in refused.stderr
    assert [(row.actor.split(":")[0], row.action) for row in _audit(collector) if row.action.startswith("quarantine.")] == [("cli", "quarantine.release"), ("cli", "quarantine.delete")]


def test_devices_page_lists_the_vendors_quarantined_files_with_release_and_delete(client, collector, admin, enroll):
    agent = enroll()
    sealed = Sealed(_collector_key(client, admin, agent), SECRET)
    _ingest(client, agent, _quarantined(sealed, path="/media/jdoe/STICK/ledger\u202etxt.exe"))
    csrf = _log_in(client, admin)
    page = client.get("/ui/devices?vendor=acme-bpo").text
    assert "ledger&lt;U+202E&gt;txt.exe" in page and "\u202e" not in page, "agent-chosen names show their hidden characters"
    assert f'action="/ui/devices/quarantine/{sealed.id}/release"' in page and f'action="/ui/devices/quarantine/{sealed.id}/delete"' in page
    assert client.post(f"/ui/devices/quarantine/{sealed.id}/release", data={"csrf": "forged", "vendor": "acme-bpo"}).status_code == 403
    done = client.post(f"/ui/devices/quarantine/{sealed.id}/release", data={"csrf": csrf, "vendor": "acme-bpo"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/ui/devices?vendor=acme-bpo&notice=release"
    page = client.get(done.headers["location"]).text
    assert "Release queued" in page and "release requested" in page and f"/ui/devices/quarantine/{sealed.id}/delete" not in page
    twice = client.post(f"/ui/devices/quarantine/{sealed.id}/delete", data={"csrf": csrf, "vendor": "acme-bpo"})
    assert twice.status_code == 409 and "Nothing was changed" in twice.text
    (sent,) = _commands(client, agent)
    assert sealed.open(sent["key"]) == SECRET
    assert re.search(r"quarantine\.release", "".join(row.action for row in _audit(collector)))


def test_the_agents_own_reader_and_quarantine_round_trip_through_the_collector(client, collector, admin, enroll, scanner, tmp_path):
    """The agent's modules at the other end (agent/device_policy.py reads the document, agent/quarantine.py
    seals, releases and reports, agent/policy.py builds the events) against this collector."""
    from agent.device_policy import DevicePolicyError, decide, verify
    from agent.policy import Context
    from agent.policy import decide as event_for
    from agent.quarantine import Quarantine
    from agent.sources.work import Device, FileWork
    from tests.conftest import SECRET_WORD

    agent = enroll()
    client.put("/api/v1/vendors/acme-bpo/device-policy", json={"action": "block", "allowed": [{"vendor_id": "0781", "note": "IT"}]}, headers=admin.headers)
    granted = client.post("/api/v1/vendors/acme-bpo/device-exceptions", json={"vendor_id": "1234", "product_id": "abcd", "serial": "SN-1", "duration": "4h",
                                                                            "reason": "visit"}, headers=admin.headers).json()  # fmt: skip
    signed = client.get("/api/v1/agent/device-policy", headers=agent.headers).json()
    policy = verify(signed["document"], signed["signature"], public_key_hex=collector.signing_public_key, vendor="acme-bpo")
    now = collector.clock().timestamp()
    stick = Device(mountpoint=str(tmp_path / "stick"), vendor_id="0781", product_id="5581", serial="X")
    assert decide(policy, stick, now)[0] == "allow"
    assert decide(policy, Device(mountpoint="/m", vendor_id="1234", product_id="abcd", serial="SN-1"), now)[1]["rule"] == f"exception {granted['id']} 1234:abcd:SN-1"
    assert decide(policy, Device(mountpoint="/m", vendor_id="1234", product_id="abcd", serial="SN-1"), now + 5 * 3600)[0] == "block", "expired"
    assert decide(policy, Device(mountpoint="/m"), now)[0] == "block"
    with pytest.raises(DevicePolicyError, match="older than version 3"):
        verify(signed["document"], signed["signature"], public_key_hex=collector.signing_public_key, vendor="acme-bpo", held_version=3)

    leak = tmp_path / "stick" / "leak.txt"
    leak.parent.mkdir()
    content = SECRET_WORD.encode() * 50_000  # over a MiB: two chunks
    leak.write_bytes(content)
    held = Quarantine(str(tmp_path / "quarantine"), str(tmp_path / "released"), lambda: policy.quarantine_key, enabled=True)
    context = Context(host="ws-1", agent_version="0.1.0", ruleset_version=None)
    work = FileWork(path=str(leak), channel="usb", device=stick)
    result = scanner.scan_path(str(leak))
    event = event_for(work, result, context, user="jdoe", now=now).event
    event["enforcement"] = held.enforce(work, result)
    _ingest(client, agent, event)
    assert not leak.exists()
    (item,) = _items(client, admin)
    assert (item["state"], item["original_path"], item["size"]) == ("held", str(leak), len(content))

    client.post(f"/api/v1/quarantine/{item['quarantine_id']}/release", headers=admin.headers)
    (command,) = _commands(client, agent)
    report = held.execute(command)
    assert leak.read_bytes() == content, "the collector's key opened the agent's copy"
    _ingest(client, agent, event_for(report, None, context, user="root", now=now).event)
    assert _commands(client, agent) == [] and _items(client, admin)[0]["state"] == "released"


def test_cli_list_shows_a_newline_in_an_agents_path_instead_of_starting_a_forged_line(client, collector, admin, enroll):
    """A file on a stick may be named with a newline followed by what looks like another item."""
    agent = enroll()
    sealed = Sealed(_collector_key(client, admin, agent), b"x")
    forged = f"{uuid.uuid4()}  released           host                           1  /media/jdoe/STICK/harmless.txt"
    _ingest(client, agent, _quarantined(sealed, path="/media/jdoe/STICK/a\n" + forged))
    listed = _dlp_server("quarantine", "list", collector=collector)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2 and not any(line.startswith(forged[:36]) for line in lines), lines
    assert "<U+000A>" in lines[1]
