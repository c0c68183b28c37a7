"""Alert forwarding: outbox filled by ingest, delivered to a real webhook and syslog receiver, retried."""

from __future__ import annotations

import http.server
import json
import queue
import socket
import threading
from collections.abc import Iterator

import pytest

from server.alerts import build_senders, deliver_due
from tests.collector_env import event_record


class _Webhook(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
        if status == 200:
            self.server.received.put(json.loads(body))

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Webhook)
    server.received = queue.Queue()
    server.statuses = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def syslog_socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


@pytest.fixture
def settings_toml(webhook, syslog_socket) -> str:
    port = webhook.server_address[1]
    return (
        f'[alerts]\nmin_severity = "high"\nwebhook_url = "http://127.0.0.1:{port}/hook"\n'
        f'syslog_host = "127.0.0.1"\nsyslog_port = {syslog_socket.getsockname()[1]}\nsyslog_protocol = "udp"\n'
    )


def test_events_at_or_above_the_threshold_reach_webhook_and_syslog(client, collector, enroll, webhook, syslog_socket):
    agent = enroll()
    critical, low = event_record(), event_record(severity="low", matches=[{"rule": "marking", "severity": "low"}])
    client.post("/api/v1/events", json={"events": [critical, low]}, headers=agent.headers)
    senders = build_senders(collector.settings.alerts)
    try:
        assert deliver_due(collector, senders) == 2  # one event, two targets
    finally:
        for sender in senders.values():
            sender.close()
    delivered = webhook.received.get(timeout=5)
    assert delivered["event"]["id"] == critical["id"] and delivered["event"]["vendor"] == "acme-bpo"
    assert webhook.received.empty()
    message = syslog_socket.recv(65536).decode("utf-8")
    assert message.startswith("<106>1 ")  # facility 13 (log audit) * 8 + 2 (critical)
    assert f"externalId={critical['id']}" in message and "CEF:0|DLP Endpoint|dlp-endpoint|" in message


def test_failed_deliveries_are_retried_with_backoff_and_never_lost(client, collector, clock, enroll, webhook):
    webhook.statuses = [500, 503]
    agent = enroll()
    record = event_record()
    client.post("/api/v1/events", json={"events": [record]}, headers=agent.headers)
    senders = {"webhook": build_senders(collector.settings.alerts)["webhook"]}
    try:
        assert deliver_due(collector, senders) == 0
        assert deliver_due(collector, senders) == 0, "not due again before its backoff"
        clock.advance(seconds=6)
        assert deliver_due(collector, senders) == 0
        clock.advance(seconds=11)
        assert deliver_due(collector, senders) == 1
    finally:
        senders["webhook"].close()
    assert webhook.received.get(timeout=5)["event"]["id"] == record["id"]


def test_ingest_does_not_wait_for_a_dead_receiver(client, collector, enroll, webhook):
    webhook.shutdown()  # nobody answers: ingest only queues the alert
    agent = enroll()
    response = client.post("/api/v1/events", json={"events": [event_record() for _ in range(50)]}, headers=agent.headers)
    assert response.status_code == 200 and response.json()["accepted"] == 50
    from server.store import outbox

    with collector.db.read() as conn:
        assert outbox.backlog(conn) == {"pending": 100, "failed": 0}
