"""Events by scope: scoped reviewers and vendor leads see nothing of another vendor (list, every filter,
detail, export, comments, triage) nor the collector's access events, and a lead sees staff names only
as stable pseudonyms until a customer reviewer reveals one; through the API and the UI, on both backends."""

from __future__ import annotations

import csv
import io
import json
import re
import stat
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from server.db.tables import cases, events, vendors
from server.pseudonyms import Pseudonyms
from server.store import reveals, review
from server.store import users as user_store
from server.store.scope import Scope
from tests.collector_env import Person, event_record, send_events
from tests.test_ui_views import _log_in

SHARED = "5a" * 32  # a file both vendors' staff copied (and the access event names)
GLOBEX_ONLY = "6b" * 32
PSEUDONYM = re.compile(r"^person-[a-z2-7]{10}$")
JDOE_PROCESS = {
    "pid": 4242, "exe": "/usr/bin/cp", "cmdline": "cp /home/jdoe/secret.txt /media/jdoe/STICK/", "uid": 1000, "user": "jdoe", "ppid": 4200,
    "parents": [{"pid": 4200, "exe": "/usr/bin/bash", "cmdline": "bash", "uid": 1000, "user": "jdoe", "ppid": 1}],
}  # fmt: skip


def _person(collector: Any, name: str, role: str, vendor_names: tuple[str, ...] | None) -> Person:
    with collector.db.write() as conn:
        ids = None if vendor_names is None else tuple(conn.execute(select(vendors.c.id).where(vendors.c.name.in_(vendor_names))).scalars())
        user, password, token = user_store.create(conn, name=name, role=role, now=collector.clock(), vendor_ids=ids)
    return Person(user.name, password, token)


def _vendor_id(collector: Any, name: str) -> int:
    with collector.db.read() as conn:
        return conn.execute(select(vendors.c.id).where(vendors.c.name == name)).scalar_one()


@pytest.fixture
def world(client: Any, collector: Any, enroll: Any, admin: Person) -> dict[str, Any]:
    """Two vendors' events, one access event of no vendor, a vendor lead and a scoped reviewer of acme-bpo."""
    acme = enroll(vendor="acme-bpo", hostname="ws-acme")
    globex = enroll(vendor="globex-it", hostname="ws-globex")
    acme_events = [
        event_record(user="jdoe", sha256=SHARED, process=JDOE_PROCESS, path="/home/jdoe/secret.txt"),
        event_record(user="jdoe", severity="low"),
        event_record(user="mallory", sha256=SHARED, path="/home/mallory/notes.txt"),
    ]
    globex_events = [
        event_record(user="eve", sha256=SHARED, host="ws-globex"),
        event_record(user="jdoe", sha256=GLOBEX_ONLY, host="ws-globex", device={"serial": "GLOBEX-SERIAL", "vendor": "Kingston"}),
    ]
    send_events(client, acme, *acme_events)
    send_events(client, globex, *globex_events)
    access_id = str(uuid.uuid4())
    now = collector.clock()
    body = {"schema": 1, "id": access_id, "type": "access.unusual_login", "channel": "access", "user": "jdoe", "sha256": SHARED, "matches": []}
    with collector.db.write() as conn:
        conn.execute(
            events.insert().values(
                id=access_id, agent_id=None, vendor_id=None, channel="access", type="access.unusual_login", occurred_at=now, received_at=now,
                severity="high", severity_rank=3, user_name="jdoe", sha256=SHARED, body=json.dumps(body), triage_status="new", origin="collector",
            )
        )  # fmt: skip
    return {
        "acme": acme,
        "globex": globex,
        "acme_ids": {e["id"] for e in acme_events},
        "jdoe_id": acme_events[0]["id"],
        "mallory_id": acme_events[2]["id"],
        "globex_ids": [e["id"] for e in globex_events],
        "access_id": access_id,
        "lead": _person(collector, "lee", "vendor_lead", ("acme-bpo",)),
        "scoped": _person(collector, "sam", "reviewer", ("acme-bpo",)),
        "admin": admin,
        "acme_vendor": _vendor_id(collector, "acme-bpo"),
        "globex_vendor": _vendor_id(collector, "globex-it"),
    }


def _listed(client: Any, person: Person, **params: str) -> list[dict[str, Any]]:
    answer = client.get("/api/v1/events", params={"limit": 1000, **params}, headers=person.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def _exported(client: Any, person: Person, fmt: str, **filters: str) -> str:
    token = _log_in(client, person)
    answer = client.post("/ui/events/export", data={"csrf": token, "format": fmt, **filters})
    assert answer.status_code == 200, answer.text
    return answer.text


def _export_ids(text: str, fmt: str) -> set[str]:
    if fmt == "jsonl":
        return {json.loads(line)["id"] for line in text.splitlines() if line}
    return {row["id"] for row in csv.DictReader(io.StringIO(text))}


@pytest.mark.parametrize("who", ["lead", "scoped"])
def test_a_scoped_account_sees_nothing_of_another_vendor_nor_access_events(client, world, who):
    person = world[who]
    assert {e["id"] for e in _listed(client, person)} == world["acme_ids"]
    assert {e["id"] for e in _listed(client, person, sha256=SHARED)} == {world["jdoe_id"], world["mallory_id"]}
    for params in (
        {"vendor": "globex-it"}, {"sha256": GLOBEX_ONLY}, {"channel": "access"}, {"agent": world["globex"].id},
        {"device": "GLOBEX-SERIAL"}, {"user": "eve"}, {"type": "access.unusual_login"},
    ):  # fmt: skip
        assert _listed(client, person, **params) == [], params
    for event_id in [*world["globex_ids"], world["access_id"]]:
        assert client.get(f"/api/v1/events/{event_id}", headers=person.headers).status_code == 404
    detail = client.get(f"/api/v1/events/{world['jdoe_id']}", headers=person.headers).json()
    assert detail["related"] == {"same_sha256": 1, "same_device": 2}, "only acme's events count, not globex's nor the access event"
    everyone = client.get(f"/api/v1/events/{world['jdoe_id']}", headers=world["admin"].headers).json()
    assert everyone["related"] == {"same_sha256": 3, "same_device": 3}
    for fmt in ("csv", "jsonl"):
        assert _export_ids(_exported(client, person, fmt), fmt) == world["acme_ids"]
        assert _export_ids(_exported(client, person, fmt, sha256=SHARED), fmt) == {world["jdoe_id"], world["mallory_id"]}
        assert _export_ids(_exported(client, person, fmt, vendor="globex-it"), fmt) == set()
    token = _log_in(client, person)
    page = client.get("/ui/events")
    assert page.status_code == 200 and "ws-globex" not in page.text and "unusual_login" not in page.text
    assert _links(page.text) == world["acme_ids"]
    assert _links(client.get(f"/ui/events?sha256={GLOBEX_ONLY}").text) == set()
    assert _links(client.get("/ui/events?vendor=globex-it").text) == set()
    for event_id in [*world["globex_ids"], world["access_id"]]:
        assert client.get(f"/ui/events/{event_id}").status_code == 404
        assert client.post(f"/ui/events/{event_id}/comments", data={"csrf": token, "body": "hello"}).status_code in (403, 404)


def _links(html: str) -> set[str]:
    return set(re.findall(r"/ui/events/([0-9a-f-]{36})", html))


def test_a_scoped_reviewer_cannot_triage_or_comment_on_another_vendors_events(client, collector, world):
    sam = world["scoped"]
    globex_id = world["globex_ids"][0]
    assert client.patch(f"/api/v1/events/{globex_id}/triage", json={"status": "benign"}, headers=sam.headers).status_code == 404
    assert client.post(f"/api/v1/events/{globex_id}/comments", json={"body": "mine?"}, headers=sam.headers).status_code == 404
    bulk = client.post("/api/v1/events/triage", json={"ids": [world["jdoe_id"], globex_id], "status": "benign"}, headers=sam.headers)
    assert bulk.status_code == 404, "one event out of scope refuses the whole request"
    shown = {e["id"]: e for e in _listed(client, world["admin"])}
    assert shown[globex_id]["triage"]["status"] == "new" and shown[world["jdoe_id"]]["triage"]["status"] == "new"
    own = client.patch(f"/api/v1/events/{world['jdoe_id']}/triage", json={"status": "investigating"}, headers=sam.headers)
    assert own.status_code == 200 and own.json()["triage"]["status"] == "investigating"
    with collector.db.read() as conn:
        assert review.get(conn, scope=Scope.everything(), event_id=globex_id)["comments"] == []


def test_a_vendor_lead_may_not_triage_assign_or_comment(client, world):
    lead = world["lead"]
    own = world["jdoe_id"]
    assert client.patch(f"/api/v1/events/{own}/triage", json={"status": "benign"}, headers=lead.headers).status_code == 403
    assert client.patch(f"/api/v1/events/{own}/triage", json={"assignee": "alice"}, headers=lead.headers).status_code == 403
    assert client.post("/api/v1/events/triage", json={"ids": [own], "status": "benign"}, headers=lead.headers).status_code == 403
    assert client.post(f"/api/v1/events/{own}/comments", json={"body": "who is this?"}, headers=lead.headers).status_code == 403
    detail = client.get(f"/api/v1/events/{own}", headers=lead.headers).json()
    assert detail["triage"]["status"] == "new" and detail["comments"] == []
    token = _log_in(client, lead)
    page = client.get(f"/ui/events/{own}")
    assert page.status_code == 200
    assert f"/ui/events/{own}/triage" not in page.text and f"/ui/events/{own}/comments" not in page.text
    listing = client.get("/ui/events").text
    assert 'name="ids"' not in listing and "bulk-status" not in listing
    assert client.post(f"/ui/events/{own}/triage", data={"csrf": token, "status": "benign"}).status_code == 403
    assert client.post("/ui/events/triage", data={"csrf": token, "ids": own, "status": "benign"}).status_code == 403
    assert client.post(f"/ui/events/{own}/comments", data={"csrf": token, "body": "x"}).status_code == 403


def test_a_vendor_lead_sees_stable_pseudonyms_everywhere_until_a_name_is_revealed(client, collector, world):
    lead = world["lead"]
    acme = world["acme_vendor"]
    jdoe = Pseudonyms.in_dir(collector.settings.data_dir).of(acme, "jdoe")  # a restarted collector reads the same key
    mallory = collector.pseudonyms.of(acme, "mallory")
    assert PSEUDONYM.match(jdoe) and PSEUDONYM.match(mallory) and jdoe != mallory
    assert collector.pseudonyms.of(world["globex_vendor"], "jdoe") != jdoe, "another vendor's jdoe is another pseudonym"
    key_file = collector.settings.data_dir / "pseudonyms.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key_file.read_bytes()) == 32

    listed = client.get("/api/v1/events", params={"limit": 100}, headers=lead.headers)
    assert "jdoe" not in listed.text and "mallory" not in listed.text, re.findall(".{80}(?:jdoe|mallory).{40}", listed.text)
    assert {e["user"] for e in listed.json()["items"]} == {jdoe, mallory}
    assert listed.json() == client.get("/api/v1/events", params={"limit": 100}, headers=lead.headers).json(), "stable across calls"
    detail = client.get(f"/api/v1/events/{world['jdoe_id']}", headers=lead.headers)
    assert "jdoe" not in detail.text
    shown = detail.json()
    assert shown["user"] == jdoe and shown["process"]["user"] == jdoe and shown["process"]["parents"][0]["user"] == jdoe
    assert shown["path"] == f"/home/{jdoe}/secret.txt" and shown["process"]["cmdline"] == f"cp /home/{jdoe}/secret.txt /media/{jdoe}/STICK/"
    assert {e["id"] for e in _listed(client, lead, user=jdoe)} == world["acme_ids"] - {world["mallory_id"]}
    assert _listed(client, lead, user="jdoe") == [], "the real name finds nothing while it is hidden"
    assert _listed(client, lead, user=collector.pseudonyms.of(world["globex_vendor"], "jdoe")) == []
    for fmt in ("csv", "jsonl"):
        exported = _exported(client, lead, fmt)
        assert "jdoe" not in exported and "mallory" not in exported and jdoe in exported
        assert _export_ids(_exported(client, lead, fmt, user=jdoe), fmt) == world["acme_ids"] - {world["mallory_id"]}
    _log_in(client, lead)
    for url in ("/ui/events", f"/ui/events/{world['jdoe_id']}", f"/ui/events?user={jdoe}"):
        page = client.get(url)
        assert page.status_code == 200 and "jdoe" not in page.text and jdoe in page.text, url

    newcomer = event_record(user="newbie", path="/home/newbie/a.txt")
    send_events(client, world["acme"], newcomer)  # after the lead's pages kept the vendor's staff names
    assert [e["id"] for e in _listed(client, lead, user=collector.pseudonyms.of(acme, "newbie"))] == [newcomer["id"]]
    assert "newbie" not in client.get(f"/api/v1/events/{newcomer['id']}", headers=lead.headers).text

    admin_view = client.get(f"/api/v1/events/{world['jdoe_id']}", headers=world["admin"].headers).json()
    assert admin_view["user"] == "jdoe" and admin_view["process"]["user"] == "jdoe", "customer reviewers see real names"
    assert client.get(f"/api/v1/events/{world['jdoe_id']}", headers=world["scoped"].headers).json()["user"] == "jdoe"

    now = collector.clock()
    with collector.db.write() as conn:
        case_id = conn.execute(
            cases.insert().values(title="USB copies", status="open", created_by="alice", created_at=now, updated_at=now).returning(cases.c.id)
        ).scalar_one()
        reveals.reveal(conn, vendor_id=acme, user_name="jdoe", case_id=case_id, actor="alice", address="192.0.2.1", now=now)
    with collector.db.read() as conn:
        assert reveals.revealed(conn, acme) == {"jdoe"} and reveals.revealed(conn, world["globex_vendor"]) == set()
    revealed = client.get(f"/api/v1/events/{world['jdoe_id']}", headers=lead.headers).json()
    assert revealed["user"] == "jdoe" and revealed["path"] == "/home/jdoe/secret.txt" and revealed["process"]["parents"][0]["user"] == "jdoe"
    assert {e["user"] for e in _listed(client, lead)} == {"jdoe", mallory, collector.pseudonyms.of(acme, "newbie")}, "the others stay pseudonyms"
    assert {e["id"] for e in _listed(client, lead, user="jdoe")} == world["acme_ids"] - {world["mallory_id"]}
    assert "jdoe" in _exported(client, lead, "csv") and "mallory" not in _exported(client, lead, "jsonl")
    entries = client.get("/api/v1/audit", headers=world["admin"].headers).json()["items"]
    audited = [e for e in entries if e["action"] == "user.reveal"]
    assert audited and audited[0]["target"] == "jdoe" and audited[0]["details"] == {"vendor_id": acme, "case_id": case_id}


def test_store_readers_need_a_scope_and_pseudonyms_for_a_lead(collector, world):
    lead_scope = Scope.vendors([world["acme_vendor"]], pseudonymize=True)
    with collector.db.read() as conn, pytest.raises(ValueError, match="pseudonyms"):
        review.page(conn, scope=lead_scope, filters=review.EventFilter(), limit=10)
    with collector.db.read() as conn:
        everything = review.page(conn, scope=Scope.everything(), filters=review.EventFilter(), limit=100).items
        assert world["access_id"] in {e["id"] for e in everything} and len(everything) == 6
        assert review.page(conn, scope=Scope.vendors([]), filters=review.EventFilter(), limit=100).items == []


def test_admins_see_the_collectors_access_events_in_the_list_and_on_their_page(client, world):
    admin = world["admin"]
    assert [e["id"] for e in _listed(client, admin, channel="access")] == [world["access_id"]]
    shown = client.get(f"/api/v1/events/{world['access_id']}", headers=admin.headers).json()
    assert shown["agent_id"] is None and shown["vendor"] is None and shown["user"] == "jdoe"
    _log_in(client, admin)
    assert world["access_id"] in client.get("/ui/events?channel=access").text
    page = client.get(f"/ui/events/{world['access_id']}")
    assert page.status_code == 200 and "the collector&#39;s own event" in page.text
