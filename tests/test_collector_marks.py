"""Marks on the collector (SQLite and PostgreSQL): minting, resolving, the API and CLI, and agents' mark matches at ingest."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import select

from agent.marks import payload as mp
from agent.marks.payload import Found
from server.db.tables import audit_log, marks
from server.db.tables import events as event_table
from server.errors import InvalidInput, NotFound
from server.keys import marks_key
from server.store import marks as mark_store
from tests.collector_env import event_record, get_event, send_events

PROSE = (
    "The quarterly pricing review covers every product line we sell to enterprise customers. "
    "Each section explains the reasoning behind a proposed change, the expected effect on renewals, "
    "and the people who approved it. Please read the whole memo before the planning meeting, "
    "compare the proposed bands with last year's figures, and prepare questions for the finance team. "
) * 6


def _key(collector: Any) -> bytes:
    return marks_key(collector.settings.data_dir)


def _mint(collector: Any, *, vendor: str = "acme-bpo", seat: str | None = "jdoe", kind: str = "watermark", **extra: Any) -> tuple[dict[str, Any], bytes]:
    with collector.db.write() as conn:
        return mark_store.mint(
            conn, key=_key(collector), kind=kind, vendor=vendor, seat=seat, subject={"name": "memo.docx", "format": "docx"}, created_by="test",
            now=collector.clock(), **extra,
        )  # fmt: skip


def _resolve(collector: Any, found: list[Found], sha256: str | None = None, key: bytes | None = None) -> list[dict[str, Any]]:
    with collector.db.read() as conn:
        return mark_store.resolve(conn, key=key or _key(collector), found=found, sha256=sha256)


def _audit(collector: Any) -> list[tuple[str, str, dict[str, Any]]]:
    with collector.db.read() as conn:
        return [(row.actor, row.action, json.loads(row.details)) for row in conn.execute(select(audit_log).order_by(audit_log.c.seq))]


def test_a_mark_is_stored_by_its_keyed_digest_and_resolves_with_graded_evidence(collector, enroll):
    enroll()
    mark, payload = _mint(collector)
    assert len(payload) == mp.PAYLOAD_BYTES and mark["mark_id"].startswith("mk_") and mark["seat"] == "jdoe" and mark["vendor"] == "acme-bpo"
    with collector.db.read() as conn:
        row = conn.execute(select(marks)).one()
    stored = " ".join(str(value) for value in row)
    assert payload.hex() not in stored and mp.token(payload) not in stored, "the database never holds the payload"
    assert row.digest == mark_store.digest(_key(collector), payload) and row.digest != hashlib.sha256(payload).hexdigest()
    assert (collector.settings.data_dir / "marks.key").stat().st_mode & 0o777 == 0o600

    one = _resolve(collector, [Found("homoglyph", payload, 1)])
    assert [(m["mark_id"], m["seat"], m["vendor"], m["evidence"]) for m in one] == [(mark["mark_id"], "jdoe", "acme-bpo", {"carriers": ["homoglyph"], "frames": 1, "strength": "moderate"})]
    assert one[0]["minted_by"] == "test" and one[0]["subject"] == {"name": "memo.docx", "format": "docx"}
    assert _resolve(collector, [Found("zero_width", payload, 3)])[0]["evidence"]["strength"] == "strong"
    both = _resolve(collector, [Found("zero_width", payload, 1), Found("homoglyph", payload, 1)])[0]["evidence"]
    assert both == {"carriers": ["homoglyph", "zero_width"], "frames": 2, "strength": "conclusive"}
    assert _resolve(collector, [Found("property", payload, 1)])[0]["evidence"]["strength"] == "conclusive"
    assert _resolve(collector, [Found("homoglyph", bytes(6)), Found("token", b"\x01\x02\x03\x04\x05\x06")]) == [], "unregistered payloads are ignored"
    assert _resolve(collector, [Found("homoglyph", payload, 5)], key=os.urandom(32)) == [], "without the key no digest matches"
    assert _resolve(collector, [Found("nonsense", payload, 5)]) == [], "an unknown carrier is not evidence"


def test_a_marked_copy_canaries_listing_and_refusals(collector, enroll):
    enroll()
    enroll(vendor="globex-it", hostname="g-1")
    first, _ = _mint(collector)
    with collector.db.write() as conn:
        mark_store.record_copy(conn, mark_id=first["mark_id"], marked_sha256="ab" * 32, marked_size=123)
    copy = _resolve(collector, [], sha256="AB" * 32)
    assert [(m["mark_id"], m["evidence"]["carriers"], m["evidence"]["strength"]) for m in copy] == [(first["mark_id"], ["copy"], "conclusive")]
    secret = b"DLPC1-" + b"A" * 26
    collector.clock.advance(seconds=5)
    canary, echoed = _mint(collector, vendor="globex-it", seat=None, kind="canary", payload=secret, canary_kind="credential")
    assert echoed == secret and canary["canary_kind"] == "credential" and canary["seat"] is None
    with collector.db.read() as conn:
        assert mark_store.canary_rules_for(conn, vendor="globex-it") == [(canary["mark_id"], "credential", hashlib.sha256(secret).hexdigest())]
        assert mark_store.canary_rules_for(conn, vendor="acme-bpo") == []
    assert _resolve(collector, [Found("canary", secret)])[0]["evidence"]["strength"] == "conclusive"
    collector.clock.advance(seconds=5)
    third, _ = _mint(collector, seat="Bob")
    with collector.db.read() as conn:
        assert [m["mark_id"] for m in mark_store.list_marks(conn)] == [third["mark_id"], canary["mark_id"], first["mark_id"]]
        assert [m["mark_id"] for m in mark_store.list_marks(conn, seat="bob")] == [third["mark_id"]], "seats match case-insensitively"
        assert [m["mark_id"] for m in mark_store.list_marks(conn, kind="canary")] == [canary["mark_id"]]
        assert [m["mark_id"] for m in mark_store.list_marks(conn, vendor="acme-bpo", before=third["mark_id"])] == [first["mark_id"]]
        assert mark_store.list_marks(conn, seat="%") == [], "a seat filter is not a pattern"
    with pytest.raises(NotFound):
        _mint(collector, vendor="nobody")
    for bad in ({"kind": "stamp"}, {"kind": "canary", "canary_kind": "credential"}, {"kind": "canary", "payload": b"x", "canary_kind": "poem"}, {"seat": "a\x1b[2Jb"}):
        with pytest.raises(InvalidInput):
            _mint(collector, **bad)
    with pytest.raises(InvalidInput, match="already registered"):
        _mint(collector, vendor="globex-it", kind="canary", payload=secret, canary_kind="credential")


def _mark_match(payload: bytes | None = None, *, carrier: str = "homoglyph", frames: int = 2, mark_id: str | None = None) -> dict[str, Any]:
    match: dict[str, Any] = {"kind": "mark", "rule": "watermark" if mark_id is None else f"canary_{mark_id[3:]}", "severity": "high", "category": "mark", "carrier": carrier, "frames": frames}
    if payload is not None:
        match["payload"] = payload.hex()
    if mark_id is not None:
        match["mark_id"] = mark_id
    return match


def _elsewhere_events(client: Any, person: Any) -> list[dict[str, Any]]:
    answer = client.get("/api/v1/events?type=agent.mark_elsewhere", headers=person.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def test_ingest_resolves_marks_drops_payloads_and_raises_mark_elsewhere_once(client, collector, reviewer, enroll):
    agent = enroll(hostname="ws-1")
    enroll(vendor="globex-it", hostname="g-1")
    own, own_payload = _mint(collector, seat="JDOE")
    desk, desk_payload = _mint(collector, seat="ws-1")
    other, other_payload = _mint(collector, seat="bob")
    foreign, foreign_payload = _mint(collector, vendor="globex-it", seat=None)
    secret = b"AKIA" + b"QWERTYUIOPASDFGH"
    canary, _ = _mint(collector, seat="jdoe", kind="canary", payload=secret, canary_kind="credential")
    unknown = os.urandom(6)
    at_home = event_record(user="jdoe", matches=[_mark_match(own_payload), _mark_match(desk_payload, carrier="zero_width", frames=1)])
    away = event_record(
        user="jdoe",
        matches=[_mark_match(other_payload), _mark_match(foreign_payload, carrier="property", frames=1), _mark_match(unknown), event_record()["matches"][0]],
    )
    by_rule = event_record(user="jdoe", matches=[_mark_match(mark_id=canary["mark_id"], carrier="canary", frames=1), _mark_match(mark_id="mk_" + "0" * 16, carrier="canary")])
    forged = event_record(marks=[{"mark_id": "mk_" + "1" * 16, "seat": "ceo"}], agent_claims={"x": 1})
    assert send_events(client, agent, at_home, away, by_rule, forged) == {"accepted": 4, "duplicates": [], "conflicts": []}

    with collector.db.read() as conn:
        bodies = dict(conn.execute(select(event_table.c.id, event_table.c.body)).all())
    for value in (own_payload, desk_payload, other_payload, foreign_payload, unknown):
        assert all(value.hex() not in body for body in bodies.values()), "no payload is stored"

    home = get_event(client, reviewer, at_home["id"])
    assert sorted((m["mark_id"], m["seat"], m["elsewhere"]) for m in home["marks"]) == sorted([(own["mark_id"], "JDOE", False), (desk["mark_id"], "ws-1", False)])
    assert all("payload" not in m for m in home["matches"]) and home["matches"][0]["carrier"] == "homoglyph"
    assert home.get("agent_claims") is None
    shown = get_event(client, reviewer, away["id"])
    assert {m["mark_id"]: m["elsewhere"] for m in shown["marks"]} == {other["mark_id"]: True, foreign["mark_id"]: True}
    assert {m["mark_id"]: m["carriers"] for m in shown["marks"]}[foreign["mark_id"]] == ["property"]
    assert shown["marks"][0].keys() == {"mark_id", "vendor", "seat", "kind", "minted_at", "carriers", "elsewhere"}
    ruled = get_event(client, reviewer, by_rule["id"])
    assert [(m["mark_id"], m["kind"], m["carriers"], m["elsewhere"]) for m in ruled["marks"]] == [(canary["mark_id"], "canary", ["canary"], False)]
    claimed = get_event(client, reviewer, forged["id"])
    assert "marks" not in claimed and claimed["agent_claims"]["marks"] == forged["marks"], "an agent's own marks are only its claim"

    raised = _elsewhere_events(client, reviewer)
    assert len(raised) == 1
    event = raised[0]
    assert (event["origin"], event["severity"], event["channel"], event["related_event"], event["user"]) == ("collector", "high", "agent", away["id"], "jdoe")
    assert sorted(m["mark_id"] for m in event["marks"]) == sorted([other["mark_id"], foreign["mark_id"]])
    assert event.get("agent_claims") is None

    again = send_events(client, agent, at_home, away)
    assert again["duplicates"] == [at_home["id"], away["id"]]
    assert len(_elsewhere_events(client, reviewer)) == 1, "a resent batch raises nothing again"


def test_mark_matches_on_egress_keep_the_egress_verdict(client, reviewer, collector, enroll):
    from tests.test_collector_egress import egress_event

    agent = enroll()
    mark, payload = _mint(collector, seat="jdoe")
    upload = egress_event("net.upload", repository=None, refs=None, severity="low", matches=[_mark_match(payload)], marks=["forged"])
    send_events(client, agent, upload)
    shown = get_event(client, reviewer, upload["id"])
    assert shown["egress_policy"] == {"allowed": False, "pattern": None} and shown["severity"] == "high"
    assert [m["mark_id"] for m in shown["marks"]] == [mark["mark_id"]]
    assert shown["agent_claims"] == {"severity": "low", "marks": ["forged"]}


def test_marks_api_is_for_admins_only(client, admin, reviewer, enroll):
    agent = enroll()
    files = {"file": ("memo.txt", PROSE.encode(), "text/plain")}
    for person, status in ((reviewer, 403), (agent, 401)):
        assert client.get("/api/v1/marks", headers=person.headers).status_code == status
        assert client.post("/api/v1/marks/apply", files=files, data={"vendor": "acme-bpo", "seat": "jdoe"}, headers=person.headers).status_code == status
        assert client.post("/api/v1/trace", files=files, headers=person.headers).status_code == status
        assert client.post("/api/v1/marks/canary", json={"vendor": "acme-bpo", "kind": "code"}, headers=person.headers).status_code == status
    assert client.get("/api/v1/marks", headers=admin.headers).json() == {"items": []}


def test_bad_uploads_are_refused_clearly(client, admin, enroll):
    enroll()

    def post(path: str, files: Any, data: dict[str, str] | None = None) -> Any:
        return client.post(path, files=files, data=data or {}, headers=admin.headers)

    one = [("file", ("memo.txt", PROSE.encode(), "text/plain"))]
    assert post("/api/v1/marks/apply", one, {"seat": "jdoe"}).json() == {"detail": "vendor is required"}
    assert post("/api/v1/marks/apply", one, {"vendor": "nobody", "seat": "jdoe"}).status_code == 404
    assert post("/api/v1/marks/apply", one, {"vendor": "acme-bpo", "seat": "a\x07b"}).status_code == 422
    assert post("/api/v1/marks/apply", one, {"vendor": "acme-bpo", "color": "red"}).status_code == 422
    assert post("/api/v1/marks/apply", one, {"vendor": "acme\x00", "seat": "jdoe"}).status_code == 404, "PostgreSQL text cannot hold NUL"
    assert post("/api/v1/marks/apply", one, {"vendor": "acme-bpo", "seat": "jdoe", "note": "a\x00b"}).status_code == 422
    assert post("/api/v1/marks/apply", [("upload", ("memo.txt", b"x", "text/plain"))], {"vendor": "acme-bpo"}).status_code == 422
    assert post("/api/v1/trace", None, {"vendor": "acme-bpo"}).status_code == 422
    many = [("file", (f"f{i}.txt", b"x", "text/plain")) for i in range(101)]
    assert post("/api/v1/trace", many).status_code == 422
    assert client.post("/api/v1/trace", content=b"not multipart", headers={**admin.headers, "Content-Type": "text/plain"}).status_code in (400, 422)
    big = [("file", ("big.bin", b"\0" * ((64 << 20) + 1), "application/octet-stream"))]
    assert post("/api/v1/trace", big).status_code == 413
    assert client.get("/api/v1/marks?limit=0", headers=admin.headers).status_code == 422
    assert client.get("/api/v1/marks?before=mk_zz", headers=admin.headers).status_code == 422
    assert client.post("/api/v1/marks/canary", json={"vendor": "acme-bpo", "kind": "poem"}, headers=admin.headers).status_code == 422
    for vendor in ('"acme\\u0000"', '"acme\\udc80"'):  # escapes JSON allows and the database cannot hold
        body = '{"vendor": ' + vendor + ', "kind": "code"}'
        sent = client.post("/api/v1/marks/canary", content=body, headers={**admin.headers, "Content-Type": "application/json"})
        assert sent.status_code == 422, sent.text
    assert _marks_audited(client, admin) == []


def _marks_audited(client: Any, admin: Any) -> list[dict[str, Any]]:
    entries = client.get("/api/v1/audit", headers=admin.headers).json()["items"]
    return [e for e in entries if e["action"].startswith("marks.")]


def test_apply_and_trace_through_the_api_are_audited(client, collector, admin, enroll):
    enroll()
    files = [("file", ("memo.txt", PROSE.encode(), "text/plain")), ("file", ("blob.bin", os.urandom(64), "application/octet-stream"))]
    answer = client.post("/api/v1/marks/apply", files=files, data={"vendor": "acme-bpo", "seat": "jdoe", "note": "Q3 pricing"}, headers=admin.headers)
    assert answer.status_code == 200, answer.text
    marked, refused = answer.json()["items"]
    assert refused["name"] == "blob.bin" and refused["error"] and "mark_id" not in refused
    assert marked["name"] == "memo.txt" and marked["format"] == "text" and marked["size"] == len(PROSE.encode())
    data = base64.b64decode(marked["content_base64"])
    assert len(data) == marked["marked_size"] and data != PROSE.encode()
    excerpt = data.decode("utf-8")[200:1400]
    traced = client.post(
        "/api/v1/trace",
        files=[("file", ("copy.txt", data, "text/plain")), ("file", ("part.txt", excerpt.encode(), "text/plain")), ("file", ("plain.txt", PROSE.encode(), "text/plain"))],
        headers=admin.headers,
    )
    assert traced.status_code == 200, traced.text
    whole, part, plain = traced.json()["items"]
    assert [m["mark_id"] for m in whole["marks"]] == [marked["mark_id"]] and "copy" in whole["marks"][0]["evidence"]["carriers"]
    assert whole["marks"][0]["seat"] == "jdoe" and whole["marks"][0]["evidence"]["strength"] == "conclusive"
    assert [m["mark_id"] for m in part["marks"]] == [marked["mark_id"]], "an excerpt still names the seat"
    assert plain["marks"] == [] and plain["sha256"] == hashlib.sha256(PROSE.encode()).hexdigest()
    listed = client.get("/api/v1/marks?vendor=acme-bpo", headers=admin.headers).json()["items"]
    assert [(m["mark_id"], m["seat"], m["subject"]["note"], m["marked_sha256"]) for m in listed] == [(marked["mark_id"], "jdoe", "Q3 pricing", hashlib.sha256(data).hexdigest())]
    audited = _marks_audited(client, admin)
    actions = {e["action"]: e for e in audited}
    assert actions["marks.apply"]["actor"] == admin.name and actions["marks.apply"]["target"] == "acme-bpo"
    assert actions["marks.apply"]["details"]["marked"] == [{"name": "memo.txt", "mark_id": marked["mark_id"], "format": "text"}]
    assert [f["marks"] for f in actions["marks.trace"]["details"]["files"]] == [[marked["mark_id"]], [marked["mark_id"]], []]


def test_canary_through_the_api_names_its_mark_and_version(client, collector, admin, enroll):
    enroll()
    answer = client.post("/api/v1/marks/canary", json={"vendor": "acme-bpo", "seat": "jdoe", "kind": "credential"}, headers=admin.headers)
    assert answer.status_code == 201, answer.text
    made = answer.json()
    secret = mp.read_canaries(base64.b64decode(made["content_base64"]).decode("utf-8"))
    assert len(secret) == 1
    found = _resolve(collector, secret)
    assert [(m["mark_id"], m["kind"], m["canary_kind"], m["seat"]) for m in found] == [(made["mark_id"], "canary", "credential", "jdoe")]
    assert made["signature_version"] >= 1
    assert client.post("/api/v1/marks/canary", json={"vendor": "nobody", "kind": "code"}, headers=admin.headers).status_code == 404


def _dlp_server(*args: str, collector: Any, cwd: Any = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DLP_DATABASE_URL": collector.settings.effective_database_url}
    command = [sys.executable, "-m", "server.cli", *args, "--data-dir", str(collector.settings.data_dir)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=cwd)


def test_cli_apply_list_trace_and_exit_codes(collector, enroll, tmp_path):
    enroll()
    source = tmp_path / "in"
    source.mkdir()
    (source / "memo.txt").write_text(PROSE)
    (source / "blob.bin").write_bytes(os.urandom(64))
    out = tmp_path / "out"
    done = _dlp_server("marks", "apply", str(source / "memo.txt"), str(source / "blob.bin"), "--vendor", "acme-bpo", "--seat", "jdoe", "--out", str(out), "--json", collector=collector)
    assert done.returncode == 1, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0]["path"].endswith("memo.txt") and lines[0]["out"] == str(out / "memo.txt") and lines[1]["error"]
    assert (out / "memo.txt").read_text() != PROSE and not (out / "blob.bin").exists()
    same = _dlp_server("marks", "apply", str(source / "memo.txt"), "--vendor", "acme-bpo", "--seat", "jdoe", "--out", str(source), collector=collector)
    assert same.returncode == 1 and "overwrite an input" in same.stdout and (source / "memo.txt").read_text() == PROSE
    assert _dlp_server("marks", "apply", str(source / "memo.txt"), "--vendor", "nobody", "--seat", "x", "--out", str(out), collector=collector).returncode == 2
    listed = json.loads(_dlp_server("marks", "list", "--vendor", "acme-bpo", "--json", collector=collector).stdout)
    assert [m["mark_id"] for m in listed["items"]] == [lines[0]["mark_id"]]
    traced = _dlp_server("trace", str(out / "memo.txt"), str(source / "memo.txt"), "--json", collector=collector)
    assert traced.returncode == 1, traced.stderr
    first, second = (json.loads(line) for line in traced.stdout.splitlines())
    assert [m["mark_id"] for m in first["marks"]] == [lines[0]["mark_id"]] and first["marks"][0]["seat"] == "jdoe" and second["marks"] == []
    clean = _dlp_server("trace", str(source / "memo.txt"), collector=collector)
    assert clean.returncode == 0 and "no registered mark" in clean.stdout
    assert _dlp_server("trace", str(tmp_path / "missing.txt"), collector=collector).returncode == 2
    actions = [(actor.split(":")[0], action) for actor, action, _ in _audit(collector) if action.startswith("marks.")]
    assert actions == [("cli", "marks.apply"), ("cli", "marks.trace"), ("cli", "marks.trace")]


def test_cli_canary_writes_a_decoy_that_traces_to_its_mark(collector, enroll, tmp_path):
    enroll()
    done = _dlp_server("marks", "canary", "--vendor", "acme-bpo", "--seat", "jdoe", "--kind", "code", "--out", str(tmp_path), "--json", collector=collector)
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    data = open(made["path"], "rb").read()
    assert hashlib.sha256(data).hexdigest() == made["sha256"]
    found = _resolve(collector, mp.read_canaries(data.decode("utf-8")))
    assert [m["mark_id"] for m in found] == [made["mark_id"]]
    listed = json.loads(_dlp_server("marks", "list", "--kind", "canary", "--json", collector=collector).stdout)["items"]
    assert [(m["mark_id"], m["canary_kind"], m["seat"]) for m in listed] == [(made["mark_id"], "code", "jdoe")]


def test_trace_survives_hostile_files(client, admin, enroll):
    import io
    import zipfile

    enroll()
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document>" + " " * (300 << 20) + "</w:document>")
    hostile = {
        "bomb.docx": bomb.getvalue(),
        "broken.docx": b"PK\x03\x04" + os.urandom(4000),
        "broken.pdf": b"%PDF-1.7\n" + os.urandom(4000),
        "entities.xml": b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><x>&b;</x>',
        "noise.txt": "".join(chr(0x430 + i % 32) + "\u200c" for i in range(20000)).encode(),
    }
    answer = client.post("/api/v1/trace", files=[("file", (name, data, "application/octet-stream")) for name, data in hostile.items()], headers=admin.headers)
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [i["name"] for i in items] == list(hostile) and all(i["marks"] == [] for i in items)
    assert items[0]["sha256"] == hashlib.sha256(hostile["bomb.docx"]).hexdigest()


def _hostile_marker(monkeypatch: Any, module: str, name: str, error: BaseException) -> None:
    """``agent.marks.documents.<module>`` raising ``error`` for the file ``name`` only."""
    import agent.marks.documents as documents

    real = getattr(documents, module)

    def patched(data: bytes, file_name: str = "", *rest: Any) -> Any:
        if file_name.endswith(name):
            raise error
        return real(data, file_name, *rest)

    monkeypatch.setattr(documents, module, patched)


@pytest.mark.parametrize("error", [KeyError("\x1b[2J" + "word/" * 200), RecursionError(), MemoryError()])
def test_a_file_that_breaks_the_marker_or_reader_is_refused_alone_with_a_clean_reason(collector, enroll, monkeypatch, error):
    from server import marking

    enroll()
    files = [("good.txt", PROSE.encode()), ("evil.docx", b"PK\x03\x04"), ("also-good.txt", PROSE.encode())]
    _hostile_marker(monkeypatch, "mark_file", "evil.docx", error)
    results = marking.apply(collector.db, key=_key(collector), files=files, vendor="acme-bpo", seat="jdoe", actor="test", now=collector.clock())
    assert [type(r).__name__ for r in results] == ["Applied", "Refused", "Applied"]
    refused = results[1]
    assert isinstance(refused, marking.Refused) and refused.error and len(refused.error) <= marking.MAX_ERROR_CHARS
    assert all(c.isprintable() for c in refused.error), refused.error
    applied = [r for r in results if isinstance(r, marking.Applied)]
    _hostile_marker(monkeypatch, "read_file", "evil.docx", error)
    traced = marking.trace(collector.db, key=_key(collector), files=[("a.txt", applied[0].data), ("evil.docx", b"x")], actor="test", now=collector.clock())
    assert [m["mark_id"] for m in traced[0]["marks"]] == [applied[0].mark_id]
    assert traced[1]["marks"] == [] and traced[1]["error"] and len(traced[1]["error"]) <= marking.MAX_ERROR_CHARS and traced[1]["error"].isprintable()
    entries = {action: details for _, action, details in _audit(collector)}
    assert entries["marks.apply"]["refused"] == [{"name": "evil.docx", "error": refused.error}]
    assert entries["marks.trace"]["files"][1]["error"] == traced[1]["error"]


def _in_process(collector: Any, command: Any, **options: Any) -> int:
    import argparse
    import contextlib

    args = argparse.Namespace(json=True, **options)
    return int(command(args, lambda _args: contextlib.nullcontext(collector), "cli:test"))


def test_cli_trace_and_apply_report_unreadable_files_and_go_on(collector, enroll, monkeypatch, tmp_path, capsys):
    from server import mark_commands

    enroll()
    (tmp_path / "one.txt").write_text(PROSE)
    (tmp_path / "two.txt").write_text(PROSE)
    out = tmp_path / "out"
    files = [str(tmp_path / "one.txt"), str(tmp_path / "gone.txt"), str(tmp_path / "two.txt")]
    assert _in_process(collector, mark_commands.cmd_apply, files=files, out=str(out), vendor="acme-bpo", seat="jdoe", note=None) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted((os.path.basename(line["path"]), "mark_id" in line, "error" in line) for line in lines) == [
        ("gone.txt", False, True),
        ("one.txt", True, False),
        ("two.txt", True, False),
    ]
    assert (out / "one.txt").exists() and (out / "two.txt").exists()

    (tmp_path / "evil.docx").write_bytes(b"PK\x03\x04")
    _hostile_marker(monkeypatch, "read_file", "evil.docx", KeyError("broken"))
    evil, marked, clean = str(tmp_path / "evil.docx"), str(out / "one.txt"), str(tmp_path / "one.txt")
    assert _in_process(collector, mark_commands.cmd_trace, files=[evil, clean]) == 2, "a file not read is no 'nothing found'"
    assert [json.loads(line).get("error") is not None for line in capsys.readouterr().out.splitlines()] == [True, False]
    assert _in_process(collector, mark_commands.cmd_trace, files=[evil, marked]) == 1, "a mark found takes precedence"
    assert _in_process(collector, mark_commands.cmd_trace, files=[clean]) == 0


def test_agents_name_only_their_own_vendors_canaries_and_never_claim_a_copy(client, collector, reviewer, enroll):
    agent = enroll(hostname="ws-1")
    enroll(vendor="globex-it", hostname="g-1")
    own_canary, _ = _mint(collector, seat="jdoe", kind="canary", payload=b"AKIA" + b"A" * 16, canary_kind="credential")
    foreign_canary, _ = _mint(collector, vendor="globex-it", seat="bob", kind="canary", payload=b"AKIA" + b"B" * 16, canary_kind="credential")
    watermark, payload = _mint(collector, seat="bob")
    with collector.db.write() as conn:
        mark_store.record_copy(conn, mark_id=watermark["mark_id"], marked_sha256="cd" * 32, marked_size=10)
    record = event_record(
        user="jdoe",
        matches=[
            _mark_match(mark_id=own_canary["mark_id"], carrier="copy"),
            _mark_match(mark_id=foreign_canary["mark_id"], carrier="canary"),
            _mark_match(mark_id=watermark["mark_id"], carrier="property"),
            _mark_match(payload, carrier="copy"),
        ],
    )
    send_events(client, agent, record)
    shown = get_event(client, reviewer, record["id"])
    assert [(m["mark_id"], m["carriers"]) for m in shown["marks"]] == [(own_canary["mark_id"], ["canary"])]
    assert _elsewhere_events(client, reviewer) == []


@pytest.mark.parametrize(
    ("seat", "hostname", "user", "same"),
    [
        ("ws-1", "WS-1.corp.example", None, True),
        ("ws-1.corp.example", "ws-1", None, True),
        ("WS-1.other.example", "ws-1.corp.example", None, True),
        ("jdoe", "ws-1", "CORP\\JDoe", True),
        ("jdoe@corp.example", "ws-1", "CORP\\jdoe", True),
        ("CORP\\jdoe", "ws-1", "jdoe@corp.example", True),
        ("jdoe", "ws-1", "jdoe2", False),
        ("john.doe", "ws-1", "CORP\\john", False),
        ("ws-2", "ws-1.corp.example", "jdoe", False),
        ("jdoe", "ws-1", None, False),
    ],
)
def test_a_seat_matches_a_host_or_user_however_written(seat, hostname, user, same):
    assert mark_store.same_seat(seat, hostname=hostname, user=user) is same
