"""What an answer to the agent's posts may cost it: a heartbeat answer carries quarantine commands
now, and whoever answers in the collector's place (a proxy, a forged server) must not make the agent
hold an unbounded body in memory before anything reads it."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.transport import MAX_REPLY_BYTES, CollectorClient


class _Flood(BaseHTTPRequestHandler):
    """Answers every post with a valid JSON object larger than the cap, gzip-encoded (a small wire
    size that decodes large), or plainly with ``status`` when the path asks for an error."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        padding = "x" * (MAX_REPLY_BYTES + (1 << 20))
        body = gzip.compress(('{"status": "ok", "detail": "' + padding + '", "commands": []}').encode(), compresslevel=9)
        self.send_response(503 if self.path.endswith("/events") else 200)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass  # the agent hung up, as it should

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flood() -> Iterator[CollectorClient]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flood)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = CollectorClient(f"http://127.0.0.1:{server.server_address[1]}", timeout_s=10)
    try:
        yield client
    finally:
        client.close()
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_heartbeat_answer_larger_than_the_cap_is_refused_unread(flood: CollectorClient) -> None:
    reply = flood.heartbeat({"agent_version": "test"})
    assert reply.kind == "retry" and reply.body is None and str(MAX_REPLY_BYTES) in reply.detail, reply.kind


def test_an_error_answer_larger_than_the_cap_is_refused_unread(flood: CollectorClient) -> None:
    reply = flood.post_events([])
    assert reply.kind == "retry" and str(MAX_REPLY_BYTES) in reply.detail and len(reply.detail) < 1000
