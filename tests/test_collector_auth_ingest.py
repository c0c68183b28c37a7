"""Ingest authenticates first: a stranger is refused before its batch is decompressed or parsed."""

from __future__ import annotations

import gzip
from contextlib import contextmanager

import pytest

from server.store import agents
from tests.collector_env import event_record

JSON = {"Content-Type": "application/json"}
BAD_BODY = b'{"events": [{"schema": 1, "type": 7}]}'


def test_a_bad_body_without_a_valid_agent_credential_is_401_not_422(client, collector, enroll, admin):
    agent = enroll()
    strangers = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWdlbnQ6c2VjcmV0"},
        {"Authorization": f"Bearer {admin.token}"},
        {"Authorization": f"Bearer dlpa_{agent.id}_not-the-secret"},
        {"Authorization": "Bearer dlpa_0123456789abcdef0123456789abcdef_unknown"},
    ]
    for headers in strangers:
        refused = client.post("/api/v1/events", content=BAD_BODY, headers={**JSON, **headers})
        assert refused.status_code == 401, (headers, refused.text)
        assert refused.headers["www-authenticate"] == "Bearer"
    assert client.post("/api/v1/events", content=BAD_BODY, headers={**JSON, **agent.headers}).status_code == 422, "a known agent is told what is wrong"


def test_a_strangers_gzip_body_is_never_decompressed(client, collector):
    encoded = {**JSON, "Content-Encoding": "gzip"}
    assert client.post("/api/v1/events", content=b"\x1f\x8b\x08garbage", headers=encoded).status_code == 401
    bomb = gzip.compress(b'{"events": [' + b" " * (collector.settings.ingest.max_decoded_bytes + 10) + b"]}")
    assert client.post("/api/v1/events", content=bomb, headers={**encoded, "Authorization": "Bearer dlpa_x"}).status_code == 401
    # Well formed but unknown: refused by the credential itself, still before a byte is inflated.
    forged = "Bearer dlpa_0123456789abcdef0123456789abcdef_" + "A" * 43
    answer = client.post("/api/v1/events", content=bomb, headers={**encoded, "Authorization": forged})
    assert answer.status_code == 401, answer.text


@pytest.mark.one_collector
def test_a_busy_agent_costs_no_extra_read_and_a_revoked_one_is_forgotten(client, collector, enroll, monkeypatch):
    agent = enroll()
    reads = []
    real_read = collector.db.read

    @contextmanager
    def counted_read():
        reads.append(1)
        with real_read() as conn:
            yield conn

    monkeypatch.setattr(collector.db, "read", counted_read)
    for _ in range(3):
        assert client.post("/api/v1/events", json={"events": [event_record()]}, headers=agent.headers).status_code == 200
    assert len(reads) == 1, "the credential is read once before the first batch, then remembered"

    with collector.db.write() as conn:
        agents.revoke(conn, agent_id=agent.id, now=collector.clock())
    assert client.post("/api/v1/events", json={"events": [event_record()]}, headers=agent.headers).status_code == 403
    assert client.post("/api/v1/events", content=BAD_BODY, headers={**JSON, **agent.headers}).status_code == 403, "refused before parsing again"
