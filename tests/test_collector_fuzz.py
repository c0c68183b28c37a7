"""Bad input to the collector: schema-driven fuzzing of every operation, then targeted attacks, on both backends."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from argon2 import PasswordHasher
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi

from server import credentials
from server.store import users
from tests.collector_env import Person, enrollment_token, event_record

AGENT_OPERATIONS = {("POST", "/api/v1/events"), ("POST", "/api/v1/heartbeat")}
LOGOUT = ("POST", "/api/v1/auth/logout")
# Derandomized so CI sees the same requests every run; shrinking stays on so a failure reports a small case.
FUZZ_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)
INJECTIONS = ["' OR 1=1 --", "%00", "\x00", "../../etc/passwd", '"; DROP TABLE events; --', "*", "%", "_", "a" * 255, "a" * 5000, "\u202e\ufffd"]
EVENT_FILTERS = ["channel", "type", "severity", "min_severity", "vendor", "agent", "user", "rule", "status", "sha256", "device", "since", "until", "limit", "cursor"]


class _Loopback:
    """The app as seen by a client on 127.0.0.1, so the fuzzer also drives address recording."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "client": ("127.0.0.1", 50000)}
        await self.app(scope, receive, send)


@pytest.fixture
def cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2 at production cost would make POST /users and logins most of the run; input handling is the target."""
    monkeypatch.setattr(credentials, "_password_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


def _fuzz(operation: Any, mode: schemathesis.GenerationMode, app: Any, headers: Callable[[], dict[str, str]], known: dict[str, str]) -> None:
    """Send generated requests for one operation; a 5xx, or an exception escaping the app, fails."""

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode), use_known=st.booleans())
    def run(case: Any, use_known: bool) -> None:
        if use_known:
            # Random ids only ever reach the 404 branch; half the cases name rows that exist instead.
            case.path_parameters.update({name: value for name, value in known.items() if name in case.path_parameters})
            if isinstance(case.body, dict) and isinstance(case.body.get("token"), str):
                case.body["token"] = known["token"]
        response = case.call(app=app, headers=headers())
        case.validate_response(response, checks=[not_a_server_error])

    run()


def _takes_input(operation: Any) -> bool:
    """Negative generation needs something to break; a bare GET like /healthz has nothing."""
    return bool(operation.body) or any(True for _ in operation.iter_parameters())


def test_no_operation_answers_5xx_to_generated_input(client, collector, admin, enroll, cheap_passwords):
    agent, victim = enroll(hostname="fuzz-1"), enroll(hostname="fuzz-victim")
    seeded = event_record()
    assert client.post("/api/v1/events", json={"events": [seeded]}, headers=agent.headers).status_code == 200
    known = {"event_id": seeded["id"], "agent_id": victim.id, "name": agent.vendor, "token": enrollment_token(collector, uses=100_000)}

    def fresh_session() -> dict[str, str]:
        # Logout revokes the token it is sent with; each call gets its own so the admin's stays valid.
        with collector.db.write() as conn:
            user = users.get(conn, name=admin.name)
            return {"Authorization": f"Bearer {users.issue_token(conn, user=user, kind='session', now=collector.clock())}"}

    def credentials_for(key: tuple[str, str]) -> Callable[[], dict[str, str]]:
        if key in AGENT_OPERATIONS:
            return lambda: agent.headers
        if key == LOGOUT:
            return fresh_session
        return lambda: admin.headers

    schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    operations = [result.ok() for result in schema.get_all_operations()]
    # credentials_for matches on these; a renamed route would otherwise be fuzzed with the wrong credential.
    assert AGENT_OPERATIONS | {LOGOUT} <= {(op.method.upper(), op.path) for op in operations}
    app = _Loopback(client.app)
    try:
        for operation in operations:
            key = (operation.method.upper(), operation.path)
            headers = credentials_for(key)
            modes = [schemathesis.GenerationMode.POSITIVE]
            if _takes_input(operation):
                modes.append(schemathesis.GenerationMode.NEGATIVE)
            for mode in modes:
                _fuzz(operation, mode, app, headers, known)
    finally:
        try:
            asgi.shutdown_lifespans()
        finally:
            # schemathesis keeps one event-loop thread for the rest of the process (ended at exit);
            # end it with the test, whose threads must not outlive it (tests/hygiene.py).
            asgi._shutdown()


# --- targeted bad input -----------------------------------------------------------------------


def _stored(client: Any, admin: Person) -> list[str]:
    """Ids of every stored event, read as a reviewer would (all pages)."""
    ids: list[str] = []
    cursor = None
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        response = client.get("/api/v1/events", params=params, headers=admin.headers)
        assert response.status_code == 200, response.text
        ids += [item["id"] for item in response.json()["items"]]
        cursor = response.json()["next_cursor"]
        if not cursor:
            return ids


def _refused(response: Any, *statuses: int, why: str = "") -> str:
    """Assert a refusal with one of ``statuses`` and a non-empty ``detail``; returns the detail as text to search."""
    assert response.status_code in statuses, f"{why}: {response.status_code} {response.text[:500]}"
    detail = response.json()["detail"]
    assert detail, f"{why}: a refusal must say why"
    return json.dumps(detail)


def _post_raw(client: Any, path: str, body: bytes, headers: dict[str, str]) -> Any:
    return client.post(path, content=body, headers={**headers, "Content-Type": "application/json"})


def _ingest(client: Any, agent: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
    response = client.post("/api/v1/events", json={"events": records}, headers=agent.headers)
    assert response.status_code == 200, response.text
    return response.json()


MALFORMED = [b'{"events": [', b"{'events': []}", b"", b"null", b"[1, 2]", b'{"events": [] ', b"\xff\xfe{}", b'{"events": [{"id": NaN}]}', b"[" * 5000]


def test_malformed_json_is_refused_everywhere_and_nothing_is_stored(client, enroll, admin):
    agent = enroll()
    record = event_record()
    for body in MALFORMED:
        _refused(_post_raw(client, "/api/v1/events", body, agent.headers), 400, 422, why=repr(body[:20]))
    assert _stored(client, admin) == []
    _ingest(client, agent, [record])
    targets = [
        (f"/api/v1/events/{record['id']}/comments", admin.headers),
        ("/api/v1/heartbeat", agent.headers),
        ("/api/v1/enroll", {}),
        ("/api/v1/vendors", admin.headers),
        ("/api/v1/users", admin.headers),
        ("/api/v1/auth/login", {}),
    ]
    for path, headers in targets:
        _refused(_post_raw(client, path, b'{"body": "x",', headers), 400, 422, why=path)
    assert client.get(f"/api/v1/events/{record['id']}", headers=admin.headers).json()["comments"] == []


WRONG_TYPES = [
    ({"id": 12345}, "id"),
    ({"id": "not-a-uuid"}, "id"),
    ({"channel": ["usb"]}, "channel"),
    ({"occurred_at": "2026-11-24T08:59:58"}, "occurred_at"),
    ({"occurred_at": "yesterday"}, "occurred_at"),
    ({"occurred_at": None}, "occurred_at"),
    ({"size": "big"}, "size"),
    ({"size": -1}, "size"),
    ({"size": 2**64}, "size"),
    ({"matches": {"rule": "x"}}, "matches"),
    ({"matches": [{"rule": 7}]}, "matches"),
    ({"device": "sdb1"}, "device"),
    ({"severity": "apocalyptic"}, "severity"),
    ({"schema": 2}, "schema"),
    ({"path": ["a", "b"]}, "path"),
    ({"sha256": "ZZ" * 32}, "sha256"),
]


def test_wrong_types_reject_the_whole_batch_with_the_field_named(client, enroll, admin):
    agent = enroll()
    for change, field in WRONG_TYPES:
        batch = [event_record(), event_record(**change), event_record()]
        response = client.post("/api/v1/events", json={"events": batch}, headers=agent.headers)
        _refused(response, 422, why=str(change))
        assert any(problem["loc"][:4] == ["body", "events", 1, field] for problem in response.json()["detail"]), (change, response.text)
    for body in ({"events": "all of them"}, {"events": None}, {"events": [[]]}, {"events": [], "extra": 1}, {}):
        _refused(client.post("/api/v1/events", json=body, headers=agent.headers), 422, why=str(body))
    for body in ({"agent_version": 1}, {"agent_version": "1", "spool_depth": "deep"}, {"agent_version": "1", "sources": []}, {"agent_version": "1", "dropped": -5}):
        _refused(client.post("/api/v1/heartbeat", json=body, headers=agent.headers), 422, why=str(body))
    assert _stored(client, admin) == []


def test_a_one_megabyte_string_is_refused_and_nothing_is_stored(client, enroll, admin):
    agent = enroll()
    megabyte = "a" * (1 << 20)
    _refused(client.post("/api/v1/events", json={"events": [event_record(), event_record(path="/" + megabyte)]}, headers=agent.headers), 413, 422)
    bulky = client.post("/api/v1/events", json={"events": [event_record(), event_record(notes=megabyte)]}, headers=agent.headers)
    assert "larger than" in _refused(bulky, 413)
    assert _stored(client, admin) == []
    record = event_record()
    _ingest(client, agent, [record])
    _refused(client.post(f"/api/v1/events/{record['id']}/comments", json={"body": megabyte}, headers=admin.headers), 413, 422)
    assert client.get(f"/api/v1/events/{record['id']}", headers=admin.headers).json()["comments"] == []
    _refused(client.post("/api/v1/heartbeat", json={"agent_version": "1", "ruleset_error": megabyte}, headers=agent.headers), 413, 422)
    _refused(client.post("/api/v1/auth/login", json={"username": "alice", "password": megabyte}), 413, 422)


LONE = "\ud800"
SURROGATE_FIELDS = [
    {"path": f"/media/{LONE}.zip"},
    {"user": "\udfff"},
    {"host": f"ws{LONE}"},
    {"notes": {"deep": [LONE]}},
    {LONE: "as a key"},
    {"matches": [{"rule": f"r{LONE}"}]},
    {"matches": [{"rule": "r", "strings": [LONE]}]},
    {"device": {"serial": LONE}},
]


def test_lone_surrogates_are_422_with_a_reason_and_nothing_is_stored(client, enroll, admin):
    agent = enroll()
    for change in SURROGATE_FIELDS:
        body = json.dumps({"events": [event_record(), event_record(**change)]}).encode()
        assert b"\\ud" in body
        detail = _refused(_post_raw(client, "/api/v1/events", body, agent.headers), 422, why=repr(change))
        assert "unicode" in detail.lower(), detail
    assert _stored(client, admin) == []
    record = event_record()
    _ingest(client, agent, [record])
    refused = [
        (f"/api/v1/events/{record['id']}/comments", {"body": f"see {LONE} here"}, admin.headers),
        ("/api/v1/heartbeat", {"agent_version": LONE}, agent.headers),
        ("/api/v1/heartbeat", {"agent_version": "1", "sources": {"usb": {"error": LONE}}}, agent.headers),
        ("/api/v1/auth/login", {"username": f"a{LONE}", "password": "x"}, {}),
        ("/api/v1/enroll", {"token": enrollment_token(client.app.state.collector), "hostname": LONE}, {}),
        ("/api/v1/events/triage", {"ids": [LONE], "status": "benign"}, admin.headers),
    ]
    for path, payload, headers in refused:
        _refused(_post_raw(client, path, json.dumps(payload).encode(), headers), 422, why=f"{path} {payload}")
    assert client.get(f"/api/v1/events/{record['id']}", headers=admin.headers).json()["comments"] == []
    assert client.get("/api/v1/agents", headers=admin.headers).status_code == 200


def test_other_unicode_junk_is_stored_and_read_back_verbatim(client, enroll, admin):
    agent = enroll()
    junk = "\u202e\U0001f600\ufeff\u0301\uffff\U0010ffff\u00e9"
    record = event_record(path=f"/media/{junk}", user=junk, notes=junk)
    body = json.dumps({"events": [record]}).encode()
    # The emoji travels as the escaped pair \ud83d\ude00, which must join up rather than count as lone surrogates.
    assert b"\\ud83d\\ude00" in body
    assert _post_raw(client, "/api/v1/events", body, agent.headers).status_code == 200
    assert _post_raw(client, f"/api/v1/events/{record['id']}/comments", json.dumps({"body": junk}).encode(), admin.headers).status_code == 201
    stored = client.get(f"/api/v1/events/{record['id']}", headers=admin.headers).json()
    assert (stored["path"], stored["user"], stored["notes"], stored["comments"][0]["body"]) == (record["path"], junk, junk, junk)


def test_values_json_cannot_carry_or_too_deep_to_read_back_are_refused(client, enroll, admin):
    agent = enroll()
    record = json.dumps(event_record()).encode()[:-1]
    for extra in (b"NaN", b"Infinity", b"-Infinity", b"[" * 40 + b"]" * 40, b"1" + b"0" * 5000):
        _refused(_post_raw(client, "/api/v1/events", b'{"events": [' + record + b', "notes": ' + extra + b"]}", agent.headers), 400, 422, why=repr(extra[:20]))
    for extra in (b"NaN", b"[" * 40 + b"]" * 40):
        body = b'{"agent_version": "1", "sources": {"usb": ' + extra + b"}}"
        _refused(_post_raw(client, "/api/v1/heartbeat", body, agent.headers), 400, 422, why=repr(extra[:20]))
    assert _stored(client, admin) == []
    assert client.get("/api/v1/agents", headers=admin.headers).status_code == 200
    nested = event_record(notes={"a": [{"b": [{"c": [1, 2]}]}]})
    _ingest(client, agent, [nested])
    assert client.get(f"/api/v1/events/{nested['id']}", headers=admin.headers).json()["notes"] == nested["notes"]


def test_times_outside_the_utc_range_are_422(client, enroll, admin):
    agent = enroll()
    for value in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        _refused(client.post("/api/v1/events", json={"events": [event_record(occurred_at=value)]}, headers=agent.headers), 422, why=value)
        _refused(client.post("/api/v1/events", json={"events": [event_record(detected_at=value)]}, headers=agent.headers), 422, why=value)
        for name in ("since", "until"):
            assert "UTC" in _refused(client.get("/api/v1/events", params={name: value}, headers=admin.headers), 422, why=f"{name}={value}")
    assert _stored(client, admin) == []
    edge = event_record(occurred_at="0001-01-01T00:00:00Z")
    _ingest(client, agent, [edge])
    assert client.get("/api/v1/events", params={"until": "0001-01-02T00:00:00Z"}, headers=admin.headers).json()["items"][0]["id"] == edge["id"]


def test_injection_in_event_filters_never_errs_or_leaks(client, enroll, admin):
    mine, other = enroll(hostname="a"), enroll(vendor="globex-it", hostname="b")
    _ingest(client, mine, [event_record(), event_record()])
    _ingest(client, other, [event_record()])
    for name in EVENT_FILTERS:
        for value in INJECTIONS:
            response = client.get("/api/v1/events", params={name: value}, headers=admin.headers)
            if response.status_code == 200:
                assert response.json()["items"] == [], f"{name}={value[:40]!r} matched rows it names nothing of"
            else:
                _refused(response, 400, 422, why=f"{name}={value[:40]!r}")
        for raw in (f"{name}=%00", f"{name}=%ff%fe", f"{name}=%ed%a0%80", f"{name}=a&{name}=b", name, f"{name}[]=x"):
            response = client.get(f"/api/v1/events?{raw}", headers=admin.headers)
            assert response.status_code < 500, f"{raw}: {response.text[:300]}"
            if response.status_code == 200:
                assert len(response.json()["items"]) in (0, 3), raw
    assert len(_stored(client, admin)) == 3


def test_a_replayed_batch_is_stored_once_and_reported_as_duplicates(client, enroll, admin):
    agent = enroll()
    batch = [event_record() for _ in range(5)]
    assert _ingest(client, agent, batch)["accepted"] == 5
    replay = _ingest(client, agent, batch + batch[:2])
    assert replay["accepted"] == 0
    assert sorted(replay["duplicates"]) == sorted([e["id"] for e in batch] + [e["id"] for e in batch[:2]])
    upper = dict(batch[0], id=batch[0]["id"].upper())
    assert _ingest(client, agent, [upper])["duplicates"] == [batch[0]["id"]]
    assert sorted(_stored(client, admin)) == sorted(e["id"] for e in batch)


def test_a_forged_agent_id_refuses_the_whole_batch(client, enroll, admin):
    mine, other = enroll(hostname="a"), enroll(hostname="b")
    batch = [event_record(), event_record(), event_record(agent_id=other.id)]
    detail = _refused(client.post("/api/v1/events", json={"events": batch}, headers=mine.headers), 403)
    assert "events[2]" in detail and "own events" in detail
    for forged in (other.id.upper(), "", 42, ["x"], {"id": mine.id}, "a" * 10_000):
        _refused(client.post("/api/v1/events", json={"events": [event_record(agent_id=forged)]}, headers=mine.headers), 403, 422, why=repr(forged)[:40])
    assert _stored(client, admin) == []
    _ingest(client, mine, [event_record(agent_id=mine.id), event_record(agent_id=None)])
    assert len(_stored(client, admin)) == 2


def _enroll_with(client: Any, token: str) -> Any:
    return client.post("/api/v1/enroll", json={"token": token, "hostname": "ws-9", "os": "linux"})


def test_expired_and_exhausted_enrollment_tokens_are_401(client, collector, clock, admin):
    expiring = enrollment_token(collector, uses=5, lifetime=timedelta(hours=1))
    single = enrollment_token(collector, uses=1)
    clock.advance(hours=1)
    assert "expired" in _refused(_enroll_with(client, expiring), 401)
    assert _enroll_with(client, single).status_code == 200
    assert "used up" in _refused(_enroll_with(client, single), 401)
    assert len(client.get("/api/v1/agents", headers=admin.headers).json()["items"]) == 1
    for token in ("", "dlpe_", "dlpe_x_", "dlpu_abc_def", single.replace("dlpe", "dlpa"), "dlpe_" + "a" * 300, f"dlpe_abc_{LONE}", "dlpe_ab\x00c_d"):
        _refused(_post_raw(client, "/api/v1/enroll", json.dumps({"token": token, "hostname": "h"}).encode(), {}), 401, 422, why=repr(token)[:40])
    assert len(client.get("/api/v1/agents", headers=admin.headers).json()["items"]) == 1


def test_enrollment_token_lifetimes_out_of_range_are_422(client, admin):
    for expires_in in ("0d", "0s", "999999w", "3651d"):
        body = {"vendor": "acme-bpo", "expires_in": expires_in}
        assert "expires_in" in _refused(client.post("/api/v1/enrollment-tokens", json=body, headers=admin.headers), 422, why=expires_in)
    assert client.post("/api/v1/enrollment-tokens", json={"vendor": "acme-bpo", "expires_in": "3650d"}, headers=admin.headers).status_code == 201


ADMIN_CALLS = [
    ("POST", "/api/v1/vendors", {"name": "initech", "allowed_cidrs": ["10.0.0.0/8"]}),
    ("PUT", "/api/v1/vendors/acme-bpo/ranges", {"allowed_cidrs": ["0.0.0.0/0"]}),
    ("POST", "/api/v1/enrollment-tokens", {"vendor": "acme-bpo"}),
    ("POST", "/api/v1/agents/{agent}/revoke", None),
    ("GET", "/api/v1/users", None),
    ("POST", "/api/v1/users", {"name": "mallory", "role": "admin"}),
    ("GET", "/api/v1/audit", None),
    ("PUT", "/api/v1/vendors/acme-bpo/device-policy", {"action": "audit", "allowed": []}),
    ("POST", "/api/v1/vendors/acme-bpo/device-exceptions", {"vendor_id": "0781", "product_id": "5581", "serial": "X1", "duration": "1h", "reason": "r"}),
    ("DELETE", "/api/v1/vendors/acme-bpo/device-exceptions/1", None),
    ("GET", "/api/v1/quarantine", None),
    ("POST", "/api/v1/quarantine/00000000-0000-4000-8000-000000000000/release", None),
    ("POST", "/api/v1/quarantine/00000000-0000-4000-8000-000000000000/delete", None),
]
REVIEW_CALLS = [
    ("GET", "/api/v1/events", None),
    ("GET", "/api/v1/events/{event}", None),
    ("PATCH", "/api/v1/events/{event}/triage", {"status": "benign"}),
    ("POST", "/api/v1/events/triage", {"ids": ["{event}"], "status": "benign"}),
    ("POST", "/api/v1/events/{event}/comments", {"body": "hi"}),
    ("GET", "/api/v1/agents", None),
    ("GET", "/api/v1/agents/{agent}", None),
    ("GET", "/api/v1/vendors", None),
    ("GET", "/api/v1/auth/me", None),
    ("POST", "/api/v1/auth/logout", None),
]


def _call(client: Any, method: str, path: str, body: Any, headers: dict[str, str], **ids: str) -> Any:
    filled = json.loads(json.dumps(body).replace("{event}", ids.get("event", ""))) if body is not None else None
    return client.request(method, path.format(**ids), json=filled, headers=headers)


def _snapshot(client: Any, admin: Person) -> tuple[Any, ...]:
    """Everything an admin endpoint could change, to compare before and after a refused call."""
    return tuple(client.get(path, headers=admin.headers).json() for path in ("/api/v1/vendors", "/api/v1/users", "/api/v1/agents"))


def test_a_reviewer_is_403_on_every_admin_endpoint_and_changes_nothing(client, enroll, reviewer, admin):
    agent = enroll()
    before = _snapshot(client, admin)
    for method, path, body in ADMIN_CALLS:
        assert "admin" in _refused(_call(client, method, path, body, reviewer.headers, agent=agent.id), 403, why=f"{method} {path}")
    assert _snapshot(client, admin) == before


def test_an_agent_credential_is_401_on_review_and_admin_endpoints(client, enroll, admin):
    agent = enroll()
    record = event_record()
    _ingest(client, agent, [record])
    before = _snapshot(client, admin)
    for method, path, body in REVIEW_CALLS + ADMIN_CALLS:
        response = _call(client, method, path, body, agent.headers, agent=agent.id, event=record["id"])
        _refused(response, 401, why=f"{method} {path}")
        assert response.headers.get("www-authenticate") == "Bearer"
    stored = client.get(f"/api/v1/events/{record['id']}", headers=admin.headers).json()
    assert stored["triage"]["status"] == "new" and stored["comments"] == []
    assert _snapshot(client, admin) == before


def test_a_user_token_is_401_on_agent_endpoints(client, enroll, admin, reviewer):
    enroll()
    for person in (admin, reviewer):
        _refused(client.post("/api/v1/events", json={"events": [event_record()]}, headers=person.headers), 401)
        _refused(client.post("/api/v1/heartbeat", json={"agent_version": "0.1.0"}, headers=person.headers), 401)
    assert _stored(client, admin) == []


BAD_CURSORS = ["!!!", "not-a-cursor", "cw", "czEyMw==x", "cy0x", "czk5OTk5OTk5OTk5OTk5OTk5OTk", "czkyMjMzNzIwMzY4NTQ3NzU4MDg", "c7mZ", "=" * 10, "a" * 64, "c8K5"]


def test_a_bad_cursor_or_a_naive_datetime_is_422(client, enroll, admin):
    _ingest(client, enroll(), [event_record()])
    for cursor in BAD_CURSORS:
        assert "cursor" in _refused(client.get("/api/v1/events", params={"cursor": cursor}, headers=admin.headers), 422, why=cursor)
    for name in ("since", "until"):
        for value in ("2026-11-24T09:00:00", "2026-11-24", "2026-11-24 09:00"):
            assert "time zone" in _refused(client.get("/api/v1/events", params={name: value}, headers=admin.headers), 422, why=f"{name}={value}")


def test_the_ingest_body_schema_is_published_although_the_route_reads_the_raw_body(client):
    document = client.get("/openapi.json").json()
    body = document["paths"]["/api/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    batch = document["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    event = document["components"]["schemas"][batch["properties"]["events"]["items"]["$ref"].rsplit("/", 1)[1]]
    assert {"id", "type", "channel", "occurred_at", "matches", "device"} <= set(event["properties"])
    assert set(event["required"]) >= {"id", "type", "channel", "occurred_at"}
