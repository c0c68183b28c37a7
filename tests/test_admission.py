"""Admission control on a real collector: a batch beyond ``ingest.max_in_flight`` gets 429 and a
Retry-After before its body is read, heartbeats are never refused, and nothing accepted is lost."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from agent.shipper import Shipper
from agent.spool import Spool
from agent.transport import CollectorClient, Reply
from server.api.admission import RETRY_AFTER_S
from tests.collector_env import ServeProcess, event_record
from tests.stack import FixedLink
from tests.waiting import wait_for


@dataclass
class Collector:
    serve: ServeProcess
    admin: dict[str, str]
    agent_credential: str

    @property
    def url(self) -> str:
        return self.serve.url


def _dlp_server(*args: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "server.cli", *args, "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def collector(database_url: str, tmp_path: Path) -> Iterator[Collector]:
    """A real ``dlp-server serve`` taking one batch at a time, with one enrolled agent."""
    env = {**os.environ, "DLP_DATABASE_URL": database_url}
    data_dir = tmp_path / "collector"
    admin = _dlp_server("init", "--data-dir", str(data_dir), env=env)
    with open(data_dir / "server.toml", "a", encoding="utf-8") as settings:
        settings.write("\n[ingest]\nmax_in_flight = 1\n")
    token = _dlp_server("token", "create", "--data-dir", str(data_dir), "--vendor", "acme-bpo", env=env)["token"]
    with ServeProcess(data_dir, env) as serve:
        serve.wait_ready()
        enrolled = requests.post(f"{serve.url}/api/v1/enroll", json={"token": token, "hostname": "ws-1", "os": "linux"}, timeout=30)
        assert enrolled.status_code == 200, enrolled.text
        yield Collector(serve, {"Authorization": f"Bearer {admin['api_token']}"}, enrolled.json()["credential"])


class HeldBatch:
    """A batch whose headers reached the collector but whose body has not yet: it holds an ingest slot."""

    def __init__(self, collector: Collector, records: list[dict[str, Any]]) -> None:
        self._body = gzip.compress(json.dumps({"events": records}).encode())
        self._sock = socket.create_connection(("127.0.0.1", collector.serve.port), timeout=30)
        head = (
            f"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {collector.agent_credential}\r\n"
            f"Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {len(self._body)}\r\n\r\n"
        )
        self._sock.sendall(head.encode() + self._body[:10])

    def finish(self) -> tuple[int, dict[str, Any]]:
        """Send the rest of the body; the status and JSON answer."""
        self._sock.sendall(self._body[10:])
        reply = self._sock.makefile("rb")
        status = int(reply.readline().split()[1])
        length = 0
        while (line := reply.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        answer = json.loads(reply.read(length))
        reply.close()
        self.close()
        return status, answer

    def close(self) -> None:
        self._sock.close()


def _post_batch(collector: Collector, records: list[dict[str, Any]], credential: str | None = None) -> requests.Response:
    body = gzip.compress(json.dumps({"events": records}).encode())
    headers = {"Authorization": f"Bearer {credential or collector.agent_credential}", "Content-Encoding": "gzip", "Content-Type": "application/json"}
    return requests.post(f"{collector.url}/api/v1/events", data=body, headers=headers, timeout=30)


def _saturated(collector: Collector) -> bool:
    """The bound is taken: even a stranger's batch is refused before its credential is looked at (401 otherwise)."""
    return requests.post(f"{collector.url}/api/v1/events", data=b"{}", timeout=30).status_code == 429


def _stored_ids(collector: Collector) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        params = {"vendor": "acme-bpo", "channel": "usb", "limit": 500, **({"cursor": cursor} if cursor else {})}
        page = requests.get(f"{collector.url}/api/v1/events", params=params, headers=collector.admin, timeout=30).json()
        ids += [item["id"] for item in page["items"]]
        if not (cursor := page["next_cursor"]):
            return ids


def test_a_batch_beyond_the_bound_gets_429_while_heartbeats_still_answer(collector: Collector) -> None:
    held_records = [event_record() for _ in range(20)]
    held = HeldBatch(collector, held_records)
    try:
        wait_for(lambda: _saturated(collector), timeout=30, message="the held batch takes the one ingest slot")
        refused_records = [event_record() for _ in range(5)]
        refused = _post_batch(collector, refused_records)
        assert refused.status_code == 429
        assert RETRY_AFTER_S[0] <= int(refused.headers["Retry-After"]) <= RETRY_AFTER_S[1]
        assert "retry" in refused.json()["detail"]
        beat = requests.post(
            f"{collector.url}/api/v1/heartbeat", json={"agent_version": "0.1.0", "spool_depth": 5}, headers={"Authorization": f"Bearer {collector.agent_credential}"}, timeout=30
        )
        assert beat.status_code == 200, beat.text

        status, answer = held.finish()
    finally:
        held.close()
    assert (status, answer["accepted"]) == (200, 20)
    # The slot is free again; the refused batch, sent again as the agent would, is taken whole.
    again = _post_batch(collector, refused_records)
    assert again.status_code == 200 and again.json()["accepted"] == 5
    assert sorted(_stored_ids(collector)) == sorted(r["id"] for r in held_records + refused_records)
    metrics = requests.get(f"{collector.url}/metrics", timeout=30).text
    assert 'dlp_ingest_batches_total{status="429"}' in metrics


def test_refused_and_failed_batches_give_their_slot_back(collector: Collector) -> None:
    """A batch the collector refuses (401, 413, 422) or answers with an error leaves the bound as it found it."""
    assert requests.post(f"{collector.url}/api/v1/events", data=b"{}", timeout=30).status_code == 401
    assert _post_batch(collector, [{"schema": 1, "id": "not-an-event"}]).status_code == 422
    assert _post_batch(collector, [event_record() for _ in range(1001)]).status_code == 413
    assert _post_batch(collector, [event_record()], credential="dlpa_bogus").status_code == 401
    records = [event_record() for _ in range(3)]
    answer = _post_batch(collector, records)
    assert answer.status_code == 200 and answer.json()["accepted"] == 3


class _RecordingClient(CollectorClient):
    """The agent's real HTTP client, keeping every answer to a batch."""

    def __init__(self, base_url: str, credential: str) -> None:
        super().__init__(base_url, credential=credential, timeout_s=30)
        self.replies: list[Reply] = []

    def post_events(self, events: list[dict[str, Any]]) -> Reply:
        reply = super().post_events(events)
        self.replies.append(reply)
        return reply


def test_the_agents_shipper_waits_out_a_429_and_delivers_every_event_once(collector: Collector, tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=1 << 30)
    records = [event_record() for _ in range(40)]
    for record in records:
        spool.put(record, matched=True)
    client = _RecordingClient(collector.url, collector.agent_credential)
    shipper = Shipper(spool, FixedLink(client), batch_events=10)  # type: ignore[arg-type]
    held_record = event_record()
    held = HeldBatch(collector, [held_record])
    try:
        wait_for(lambda: _saturated(collector), timeout=30, message="the held batch takes the one ingest slot")
        shipper.start()
        wait_for(lambda: client.replies, timeout=30, message="the shipper's first batch")
        first = client.replies[0]
        assert first.kind == "retry" and first.retry_after is not None and RETRY_AFTER_S[0] <= first.retry_after <= RETRY_AFTER_S[1]
        assert spool.depth() == 40
        assert held.finish()[0] == 200
        wait_for(lambda: spool.depth() == 0, timeout=60, message="the spool drained after the Retry-After")
    finally:
        shipper.stop()
        held.close()
        spool.close()
    delivered = [reply for reply in client.replies if reply.kind == "ok"]
    assert [reply.body["accepted"] for reply in delivered if reply.body] == [10, 10, 10, 10]
    assert all(not reply.body["duplicates"] for reply in delivered if reply.body)
    assert sorted(_stored_ids(collector)) == sorted([held_record["id"], *(r["id"] for r in records)])
