"""A loopback HTTP proxy in front of the collector that misbehaves on request.

It forwards every request to the real collector, then can answer 500 instead of the
collector's reply, or hold the reply back longer than the agent waits (the collector has
committed, the agent gives up: the retry must be absorbed as duplicates).
"""

from __future__ import annotations

import http.client
import http.server
import threading
from collections.abc import Iterator

import pytest


class FaultProxy(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream_port: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream_port = upstream_port
        self.lock = threading.Lock()
        self.fail_remaining = 0
        self.fail_status = 500
        self.hold_replies_s = 0.0
        self.replace_get_body: bytes | None = None
        """When set, GET replies carry these bytes instead of the collector's (a forged bundle)."""
        self.forwarded = 0
        self.failed = 0
        self._released = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fail_next(self, count: int, status: int = 500) -> None:
        with self.lock:
            self.fail_remaining, self.fail_status = count, status

    def hold_replies(self, seconds: float) -> None:
        with self.lock:
            self.hold_replies_s = seconds

    def release(self) -> None:
        self._released.set()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FaultProxy
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        status, payload, kind, etag = self._forward("GET", None)
        with self.server.lock:
            forged = self.server.replace_get_body
        if forged is not None:
            status, payload, kind, etag = 200, forged, "application/octet-stream", "forged"
        self._reply(status, payload, kind, etag)

    def _forward(self, method: str, body: bytes | None) -> tuple[int, bytes, str, str | None]:
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            upstream.request(method, self.path, body=body, headers=headers)
            reply = upstream.getresponse()
            return reply.status, reply.read(), reply.getheader("Content-Type", "application/json"), reply.getheader("ETag")
        finally:
            upstream.close()

    def _reply(self, status: int, payload: bytes, kind: str, etag: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        if etag:
            self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, payload, kind, _ = self._forward("POST", body)
        with self.server.lock:
            self.server.forwarded += 1
            failing = self.server.fail_remaining > 0
            if failing:
                self.server.fail_remaining -= 1
                self.server.failed += 1
            hold = self.server.hold_replies_s
        if hold:
            self.server._released.wait(hold)
        if failing:
            status, payload, kind = self.server.fail_status, b'{"detail": "injected failure"}', "application/json"
        self._reply(status, payload, kind)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fault_proxy_factory() -> Iterator:
    proxies: list[FaultProxy] = []

    def make(upstream_port: int) -> FaultProxy:
        proxy = FaultProxy(upstream_port)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.release()
        proxy.shutdown()
        proxy.server_close()
