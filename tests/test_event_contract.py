"""The event contract: what the agent makes survives the collector unchanged, and what the collector
owns (origin, host, vendor, review state) can never be set by an agent; on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent import events as contract
from agent.egress.scan import RepositoryScan, UploadScan
from agent.policy import Context, decide, decide_egress
from agent.scanning.results import Match, ScanResult, Status
from agent.sources.work import ClipboardWork, Device, DeviceChange, EgressWork, FileWork, QuarantineReport, SourceProblem
from agent.spool import Spool
from server.api.schemas import DeviceIn
from server.siem.export import write_events
from server.store import review
from server.store.scope import Scope
from tests.collector_env import event_record

CTX = Context(host="ws-a", agent_version="0.1.0", ruleset_version="148583d2a3f6984c")
MATCH = Match(rule="private_key_pem", namespace="credentials", severity="critical", category="secret", offsets=(4,))
STICK = Device(
    mountpoint="/media/jdoe/STICK", device="/dev/sdb1", fstype="exfat", vendor="SanDisk", model="Ultra",
    serial="4C530001", label="STICK", size_bytes=61505273856, bus="usb",
)  # fmt: skip
WRITER = {
    "pid": 4242, "exe": "/usr/bin/cp", "cmdline": "cp -r src /media/jdoe/STICK", "uid": 1000, "user": "jdoe", "ppid": 4200,
    "parents": [{"pid": 4200, "exe": "/usr/bin/bash", "cmdline": "bash", "uid": 1000, "user": "jdoe", "ppid": 1}],
}  # fmt: skip
BLOCKED = {"action": "block", "mode": "enforce", "done": True, "detail": "unmounted: not an allowed device"}
READ_ONLY = {"action": "read-only", "mode": "enforce", "done": True, "detail": "remounted read-only"}
QUARANTINE_ID = "5b0c8a8e-4d7e-4c55-9a53-0d1a8f0c2e11"
HELD = {"id": QUARANTINE_ID, "ephemeral_key": "cd" * 32, "original_path": "/media/jdoe/STICK/a.zip", "size": 10, "sha256": "ab" * 32}
RELEASED = {"action": "release", "mode": "enforce", "done": True, "detail": "decrypted", "command": 7, "quarantine": HELD}
UNKNOWN = {"id": QUARANTINE_ID, "ephemeral_key": None, "original_path": None, "size": None, "sha256": None}
DELETED = {"action": "delete", "mode": "enforce", "done": False, "detail": "no such quarantined file on this agent", "command": 8, "quarantine": UNKNOWN}
ROOT = Path(__file__).resolve().parent.parent
PUSHED_TO = {"tool": "git", "transport": "https", "host": "github.example", "port": None, "path": "/jdoe/app.git", "url": "https://github.example/jdoe/app.git", "remote": "mine"}
UPLOADED_TO = {"tool": "scp", "transport": "scp", "host": "203.0.113.7", "port": 22, "path": "/tmp/", "url": "scp://203.0.113.7:22/tmp/", "remote": None}
REPOSITORY = {
    "path": "/home/jdoe/work/app", "head": "a" * 40, "branch": "main", "root_commits": ["b" * 40], "protected": True,
    "reasons": ["folder", "signature"], "protected_folder": "/home/jdoe/work", "copy_of": None, "scan_status": "complete",
    "scanned_files": 12, "scanned_bytes": 40960, "matched_files": 1,
}  # fmt: skip
GIT = {**WRITER, "exe": "/usr/bin/git", "cmdline": "git push mine main"}


def _egress_records() -> list[dict[str, Any]]:
    """One record of each egress type, built by the policy from what the scan found."""
    repo = RepositoryScan(REPOSITORY, (dataclasses.replace(MATCH, member="src/key.pem"),))
    copy = RepositoryScan({**REPOSITORY, "path": "/tmp/copy", "reasons": ["root_commit"], "copy_of": REPOSITORY["path"]}, ())
    upload = UploadScan((ScanResult(path="/home/jdoe/out/key.pem", status=Status.MATCH, sha256="ab" * 32, size=10, matches=(MATCH,)),),
                        {"files_named": 2, "files_scanned": 2, "files_matched": 1, "bytes_scanned": 20, "truncated": False})
    made = [
        *decide_egress(EgressWork(type=contract.GIT_PUSH, destination=PUSHED_TO, process=GIT, repository=REPOSITORY["path"], refs=("main",)), repo, None, CTX, user="jdoe", now=1_800_000_000),
        *decide_egress(EgressWork(type=contract.GIT_REMOTE, destination=PUSHED_TO, process=GIT, repository=REPOSITORY["path"]), repo, None, CTX, user="jdoe", now=1_800_000_000),
        *decide_egress(EgressWork(type=contract.GIT_CLONE, destination=None, process=GIT, repository="/tmp/copy"), copy, None, CTX, user="jdoe", now=1_800_000_000),
        *decide_egress(EgressWork(type=contract.NET_UPLOAD, destination=UPLOADED_TO, process=WRITER, files=("/home/jdoe/out",)), None, upload, CTX, user="jdoe", now=1_800_000_000),
    ]
    return [decision.event for decision in made]


def _scan(status: Status, matches: tuple[Match, ...] = ()) -> ScanResult:
    return ScanResult(path="/x", status=status, sha256="ab" * 32, size=10, matches=matches)


def _policy_records() -> list[dict[str, Any]]:
    """One record of every kind the agent's policy makes, built by the policy itself."""
    made = [
        decide(FileWork(path="/home/jdoe/out/key.pem"), _scan(Status.MATCH, (MATCH,)), CTX, user="jdoe", now=1_800_000_000),
        decide(FileWork(path="/media/jdoe/STICK/a.zip", channel="usb", device=STICK), _scan(Status.MATCH, (MATCH,)), CTX, user="jdoe", now=1_800_000_000),
        decide(DeviceChange(type=contract.USB_MOUNT, device=STICK), None, CTX, user="jdoe", now=1_800_000_000),
        decide(DeviceChange(type=contract.USB_UNMOUNT, device=STICK), None, CTX, user="jdoe", now=1_800_000_000),
        decide(DeviceChange(type=contract.USB_BLOCKED, device=STICK, enforcement=BLOCKED), None, CTX, user="jdoe", now=1_800_000_000),
        decide(DeviceChange(type=contract.USB_READONLY, device=STICK, enforcement=READ_ONLY), None, CTX, user="jdoe", now=1_800_000_000),
        decide(FileWork(path="/home/jdoe/out/k.pem", process=WRITER), _scan(Status.MATCH, (MATCH,)), CTX, user="jdoe", now=1_800_000_000),
        decide(ClipboardWork(data=b"-----BEGIN RSA PRIVATE KEY-----", sha256="cd" * 32, original_size=40), _scan(Status.MATCH, (MATCH,)), CTX, user="jdoe", now=1_800_000_000),
        decide(QuarantineReport(type=contract.QUARANTINE_RELEASED, path="/media/jdoe/STICK/a.zip", enforcement=RELEASED, size=10, sha256="ab" * 32), None, CTX, user=None, now=1_800_000_000),
        decide(QuarantineReport(type=contract.QUARANTINE_DELETED, path=None, enforcement=DELETED), None, CTX, user=None, now=1_800_000_000),
        decide(SourceProblem(type=contract.SOURCE_EVENTS_LOST, path=STICK.mountpoint, message="events were lost", device=STICK), None, CTX, user="jdoe", now=1_800_000_000),
    ]
    return [decision.event for decision in made if decision is not None] + _egress_records()


def _spool_drop_record(tmp_path: Path) -> dict[str, Any]:
    """The ``spool.dropped`` report a real spool writes when its cap refuses an event."""
    with Spool(str(tmp_path / "spool.db"), max_bytes=2048) as spool:
        while spool.dropped_total() == 0:
            spool.put({"id": str(uuid.uuid4()), "type": contract.FILE_WRITE, "pad": "x" * 500}, matched=True)
        (report,) = [e for e in spool.lease(100, lease_seconds=60).events if e["type"] == contract.SPOOL_DROPPED]
    return report


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _events(client: Any, person: Any, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/v1/events", params={"limit": 1000, **params}, headers=person.headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_every_record_the_agent_makes_round_trips_through_the_collector(client, enroll, admin, tmp_path):
    records = _policy_records() + [_spool_drop_record(tmp_path)]
    assert {r["type"] for r in records} == set(contract.AGENT_TYPES)
    agent = enroll(hostname="ws-a")
    response = client.post("/api/v1/events", json={"events": records}, headers=agent.headers)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(records)
    shown = {item["id"]: item for item in _events(client, admin)}
    for record in records:
        item = shown[record["id"]]
        for name, value in record.items():
            if name.endswith("_at"):  # the same instant, spelt with or without zero milliseconds
                assert _instant(item[name]) == _instant(value), (record["type"], name)
            else:
                assert item[name] == value, (record["type"], name)
        assert item["channel"] == contract.AGENT_TYPES[record["type"]]
        assert (item["origin"], item["agent_id"], item["vendor"], item["host"]) == ("agent", agent.id, "acme-bpo", "ws-a")
        assert item["agent_claims"] is None and item["claimed_host"] is None
        assert set(record) <= contract.AGENT_FIELDS, set(record) - contract.AGENT_FIELDS


def test_every_device_field_the_agent_reports_is_typed_at_the_collector():
    assert {f.name for f in dataclasses.fields(Device)} == set(DeviceIn.model_fields)


@pytest.mark.parametrize("kind", [contract.AGENT_UNEXPECTED_IP, contract.AGENT_ONLINE, contract.AGENT_OFFLINE, "agent.anything_later"])
def test_an_agent_cannot_submit_the_collectors_own_events(client, enroll, admin, kind):
    agent = enroll()
    forged = event_record(type=kind, channel="agent", origin="collector", address="203.0.113.9", country="CN", severity="high")
    response = client.post("/api/v1/events", json={"events": [event_record(), forged]}, headers=agent.headers)
    assert response.status_code == 422
    detail = json.dumps(response.json()["detail"])
    assert "events[1]" in detail and forged["id"] in detail and kind in detail
    assert _events(client, admin) == []


@pytest.mark.parametrize(("kind", "channel"), [(contract.GIT_PUSH, "file"), (contract.NET_UPLOAD, "usb"), (contract.FILE_WRITE, "egress")])
def test_a_known_type_must_come_in_its_own_channel(client, enroll, admin, kind, channel):
    agent = enroll()
    disguised = event_record(type=kind, channel=channel, severity="low")
    response = client.post("/api/v1/events", json={"events": [event_record(), disguised]}, headers=agent.headers)
    assert response.status_code == 422
    detail = json.dumps(response.json()["detail"])
    assert "events[1]" in detail and disguised["id"] in detail and kind in detail
    assert _events(client, admin) == []


def test_the_collectors_own_events_say_so(client, collector, clock, enroll, admin):
    agent = enroll()
    clock.advance(seconds=collector.settings.agents.offline_after_s + 1)
    from server.maintenance import sweep_offline

    assert sweep_offline(collector) == 1
    assert client.post("/api/v1/heartbeat", json={"agent_version": "0.1.0"}, headers=agent.headers).status_code == 200
    raised = {item["type"]: item for item in _events(client, admin, channel="agent")}
    assert set(raised) == {contract.AGENT_OFFLINE, contract.AGENT_ONLINE}
    assert all(item["origin"] == "collector" and item["agent_claims"] is None for item in raised.values())


def test_an_agent_cannot_rename_its_host(client, enroll, admin):
    agent = enroll(hostname="ws-a")
    honest, renamed = event_record(host="ws-a"), event_record(host="ws-c")
    assert client.post("/api/v1/events", json={"events": [honest, renamed]}, headers=agent.headers).status_code == 200
    listed = {item["id"]: item for item in _events(client, admin)}
    assert listed[honest["id"]]["host"] == "ws-a" and listed[honest["id"]]["claimed_host"] is None
    assert (listed[renamed["id"]]["host"], listed[renamed["id"]]["claimed_host"]) == ("ws-a", "ws-c")
    detail = client.get(f"/api/v1/events/{renamed['id']}", headers=admin.headers).json()
    assert (detail["host"], detail["claimed_host"]) == ("ws-a", "ws-c")
    assert _events(client, admin, agent=agent.id) and all(item["host"] == "ws-a" for item in _events(client, admin))


def test_an_agent_cannot_set_review_state_or_other_collector_fields(client, enroll, admin, reviewer):
    agent = enroll()
    forged_values = {
        "comments": [{"author": "admin", "body": "checked, benign", "created_at": "2026-11-24T09:00:00.000Z"}],
        "triage_status": "benign",
        "triage": {"status": "benign", "assignee": "admin"},
        "vendor": "other-vendor",
        "origin": "collector",
        "received_at": "2020-01-01T00:00:00.000Z",
        "source_ip": "10.9.9.9",
        "source_country": "US",
        "seq": 1,
        "related": {"same_sha256": 0},
        "agent_claims": {"nothing": "here"},
    }
    forged = event_record(**forged_values)
    assert client.post("/api/v1/events", json={"events": [forged]}, headers=agent.headers).status_code == 200
    (item,) = _events(client, admin)
    detail = client.get(f"/api/v1/events/{forged['id']}", headers=admin.headers).json()
    for shown in (item, detail):
        assert shown["triage"] == {"status": "new", "assignee": None}
        assert shown["vendor"] == "acme-bpo" and shown["origin"] == "agent"
        assert shown["source_ip"] != "10.9.9.9" and shown["received_at"] != "2020-01-01T00:00:00.000Z"
        assert "triage_status" not in shown
        assert shown["agent_claims"] == forged_values
    assert "comments" not in item and detail["comments"] == [] and detail["related"] != forged_values["related"]


def test_exports_keep_agent_claims_apart(client, collector, enroll, admin, reviewer):
    agent = enroll()
    forged = event_record(comments=[{"author": "admin", "body": "fine"}], triage_status="benign", vendor="other-vendor")
    assert client.post("/api/v1/events", json={"events": [forged]}, headers=agent.headers).status_code == 200
    out = io.StringIO()
    with collector.db.read() as conn:
        write_events(review.iter_for_export(conn, scope=Scope.everything(), filters=review.EventFilter()), out, fmt="jsonl", product_version="test")
    (line,) = out.getvalue().splitlines()
    exported = json.loads(line)
    assert exported["vendor"] == "acme-bpo" and "triage_status" not in exported and "comments" not in exported
    assert exported["agent_claims"]["triage_status"] == "benign"


def test_junk_device_fields_are_refused_and_unknown_ones_shown_as_text(client, collector, enroll, admin, reviewer):
    agent = enroll()
    junk = event_record(device={"size_bytes": "lots"})
    response = client.post("/api/v1/events", json={"events": [junk]}, headers=agent.headers)
    assert response.status_code == 422
    assert ["body", "events", 0, "device", "size_bytes"] in [problem["loc"] for problem in response.json()["detail"]]
    odd = event_record(device={"serial": "S1", "size_bytes": 2_000_000_000, "colour": "<b>red</b>"})
    assert client.post("/api/v1/events", json={"events": [odd]}, headers=agent.headers).status_code == 200
    # A row stored before the device fields were typed: the page shows the junk, never computes on it.
    from server.db.tables import events

    legacy = event_record(device={"size_bytes": "lots", "serial": "S2"})
    with collector.db.write() as conn:
        conn.execute(events.update().where(events.c.id == odd["id"]).values(body=json.dumps({**odd, "device": legacy["device"]})))
    page = _ui_get(client, reviewer, f"/ui/events/{odd['id']}")
    assert page.status_code == 200 and "lots" in page.text


def test_event_page_shows_claims_and_origin(client, enroll, reviewer):
    agent = enroll(hostname="ws-a")
    forged = event_record(host="ws-c", vendor="other-vendor", device={"serial": "S1", "colour": "<b>red</b>"})
    assert client.post("/api/v1/events", json={"events": [forged]}, headers=agent.headers).status_code == 200
    page = _ui_get(client, reviewer, f"/ui/events/{forged['id']}")
    assert page.status_code == 200
    assert "the agent calls it" in page.text and "ws-c" in page.text
    assert "Claims the agent made" in page.text and "other-vendor" in page.text
    assert "colour" in page.text and "&lt;b&gt;red&lt;/b&gt;" in page.text and "<b>red</b>" not in page.text
    listing = _ui_get(client, reviewer, "/ui/events")
    assert "claims another name" in listing.text


def _ui_get(client: Any, person: Any, path: str) -> Any:
    """``path`` fetched by ``person`` logged in through the form, as a browser does."""
    client.cookies.clear()
    form = client.get("/ui/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    login = client.post("/ui/login", data={"username": person.name, "password": person.password, "nonce": nonce}, follow_redirects=False)
    assert login.status_code == 303, login.text
    return client.get(path)


# --- one vocabulary ----------------------------------------------------------------------------

_SPELLED_OUT = [
    re.compile(r"""["']low["'],\s*["']medium["'],\s*["']high["']"""),
    re.compile(r"""["']critical["']\s*:\s*\d|["']low["']\s*:\s*\d"""),
    re.compile(r"""["']file["'],\s*["']usb["'],\s*["']clipboard["']"""),
    re.compile(r"""["']new["'],\s*["']investigating["']"""),
]


def test_channels_severities_and_triage_statuses_are_spelled_out_once():
    allowed = {ROOT / "agent" / "events.py", ROOT / "server" / "store" / "review.py"}
    offenders = []
    for folder in ("agent", "server", "signatures"):
        for path in sorted((ROOT / folder).rglob("*.py")) + sorted((ROOT / folder).rglob("*.html")):
            if path in allowed:
                continue
            text = path.read_text(encoding="utf-8")
            offenders += [f"{path.relative_to(ROOT)}: {m.group()}" for pattern in _SPELLED_OUT for m in [pattern.search(text)] if m]
    assert offenders == []


def test_schema_version_and_channels_agree_across_the_contract():
    assert contract.SCHEMA_VERSION == 1  # EventIn's Literal[1]; a new version is a new schema, not a new number
    assert set(contract.AGENT_TYPES.values()) | set(contract.COLLECTOR_TYPES.values()) <= set(contract.CHANNELS)
    assert not any(contract.collector_raised(kind) for kind in contract.AGENT_TYPES)
    assert all(contract.collector_raised(kind) for kind in contract.COLLECTOR_TYPES)
    assert not contract.AGENT_FIELDS & contract.COLLECTOR_FIELDS
    assert contract.worst_severity(["low", None, "critical", "bogus"]) == "critical" and contract.worst_severity([]) is None


def test_migrations_build_the_schema_the_code_declares(database_url):
    """The migrated database (SQLite and PostgreSQL) has exactly the tables, columns and indexes of db/tables.py."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from server.db.tables import metadata

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn, opts={"compare_server_default": False}), metadata)
    finally:
        engine.dispose()
    assert differences == []


@pytest.fixture
def scratch_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of ``backend``, dropped afterwards, for a migration to start from nothing."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    from sqlalchemy import create_engine, text

    from tests.collector_env import PG_ADMIN_URL

    name = f"dlp_migrate_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_an_upgraded_database_keeps_forgeries_the_agents_and_shows_the_enrolled_host(scratch_url):
    """Rows stored before revision 0004: only an ``agent.*`` event written by the collector (one
    clock reading for occurrence and arrival) becomes the collector's; a forged one stays the agent's."""
    from alembic import command
    from sqlalchemy import text

    from server.db.engine import Database
    from server.db.migrate import alembic_config

    db = Database(scratch_url)
    config = alembic_config()
    try:
        with db.engine.connect() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0003")
            conn.execute(text("INSERT INTO vendors (id, name, allowed_cidrs, created_at) VALUES (1, 'v', '[]', '2026-11-24 00:00:00+00')"))
            conn.execute(
                text(
                    "INSERT INTO agents (id, vendor_id, hostname, os, machine_id, agent_version, secret_hash, status, enrolled_at, last_seen_at, sources, spool_depth, dropped)"
                    " VALUES ('a1', 1, 'ws-a', '', '', '', 'x', 'online', '2026-11-24 00:00:00+00', '2026-11-24 00:00:00+00', '{}', 0, 0)"
                )
            )
            rows = (
                (1, "agent.offline", "ws-a", "2026-11-24 00:00:00.123456+00"),  # the collector's own
                (2, "agent.online", "ws-a", "2026-11-24 00:00:00+00"),  # an agent's forgery
                (3, "usb.write", "ws-c", "2026-11-24 00:00:00+00"),
            )
            for seq, kind, host, occurred in rows:
                conn.execute(
                    text(
                        "INSERT INTO events (seq, id, agent_id, vendor_id, channel, type, occurred_at, received_at, severity_rank, host, body, triage_status)"
                        " VALUES (:seq, :id, 'a1', 1, 'agent', :kind, :occurred, '2026-11-24 00:00:00.123456+00', 0, :host, :body, 'new')"
                    ),
                    {"seq": seq, "id": str(uuid.uuid4()), "kind": kind, "host": host, "occurred": occurred, "body": json.dumps({"host": host, "origin": "collector"})},
                )
            command.upgrade(config, "head")
            conn.commit()
            found = conn.execute(text("SELECT type, origin, host FROM events ORDER BY seq")).all()
    finally:
        db.dispose()
    assert [tuple(row) for row in found] == [("agent.offline", "collector", "ws-a"), ("agent.online", "agent", "ws-a"), ("usb.write", "agent", "ws-a")]


def test_bulk_triage_is_audited_as_bulk_even_for_one_event_and_an_unchanged_one_not_at_all(client, collector, enroll, reviewer):
    agent = enroll()
    record = event_record()
    assert client.post("/api/v1/events", json={"events": [record]}, headers=agent.headers).status_code == 200
    bulk = client.post("/api/v1/events/triage", json={"ids": [record["id"], record["id"]], "status": "benign"}, headers=reviewer.headers)
    assert bulk.json() == {"updated": 1, "status": "benign"}
    again = client.post("/api/v1/events/triage", json={"ids": [record["id"]], "status": "benign"}, headers=reviewer.headers)
    assert again.json() == {"updated": 0, "status": "benign"}
    unchanged = client.patch(f"/api/v1/events/{record['id']}/triage", json={"status": "benign"}, headers=reviewer.headers)
    assert unchanged.status_code == 200
    from server.db.tables import audit_log

    with collector.db.read() as conn:
        entries = conn.execute(audit_log.select().where(audit_log.c.action.like("event.triage%")).order_by(audit_log.c.seq)).all()
    assert [(e.action, e.target, json.loads(e.details)) for e in entries] == [("event.triage_bulk", "1 events", {"ids": [record["id"]], "status": "benign"})]


def test_the_collector_cannot_raise_an_event_whose_details_pose_as_its_columns(collector, enroll):
    from server.store import ingest
    from server.store.agents import AgentIdentity

    identity = AgentIdentity("a" * 32, 1, "acme-bpo", "ws-a", (), "online")
    with collector.db.write() as conn, pytest.raises(ValueError, match="triage"):
        ingest.raise_agent_event(conn, agent=identity, kind=contract.AGENT_OFFLINE, details={"triage": {"status": "benign"}}, now=collector.clock())
    with collector.db.write() as conn, pytest.raises(ValueError, match="not an event type"):
        ingest.raise_agent_event(conn, agent=identity, kind=contract.USB_WRITE, details={}, now=collector.clock())
