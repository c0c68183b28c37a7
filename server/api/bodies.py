"""Request bodies bounded before any route sees them: size on the wire, and size after gunzip.

FastAPI would otherwise read a body of any length into memory, and a gzip body can expand
a thousandfold; both are refused with 413 here, a corrupt gzip stream with 400 and an
unknown Content-Encoding with 415. Routes then receive a plain, bounded body. A streamed
route (a fingerprint index upload, hundreds of megabytes) is not buffered: its declared length
is checked here and the route itself counts what it reads against its own limit. A route may
also name a guard on its Authorization header, so a caller without a valid credential is
refused (401, or 403 for a revoked one) before its body is read or decompressed at all.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from anyio import to_thread

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
Guard = Callable[[bytes | None], Awaitable[tuple[int, str] | None]]
"""Given the raw Authorization header (None when absent): the status and reason the caller is refused with, or None."""

_THREAD_THRESHOLD = 256 << 10


class BodyTooLarge(Exception):
    pass


class BadEncoding(Exception):
    pass


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """Every gzip member of ``data``, refusing to produce more than ``max_bytes``."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, max_bytes - len(out) + 1)
        except zlib.error as exc:
            raise BadEncoding(f"gzip body is corrupt: {exc}") from None
        if len(out) > max_bytes or inflater.unconsumed_tail:
            raise BodyTooLarge(f"body expands beyond {max_bytes} bytes")
        if not inflater.eof:
            raise BadEncoding("gzip body is truncated")
        data = inflater.unused_data
    return bytes(out)


class BoundedBodies:
    def __init__(
        self,
        app: App,
        *,
        default_limit: int,
        route_limits: Mapping[tuple[str, str], int],
        max_decoded: int,
        guards: Mapping[tuple[str, str], Guard] | None = None,
        streamed: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.route_limits = dict(route_limits)
        self.max_decoded = max_decoded
        self.guards = dict(guards or {})
        self.streamed = dict(streamed or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        route = (scope["method"], scope["path"])
        headers = {k.lower(): v for k, v in scope["headers"]}
        guard = self.guards.get(route)
        refusal = await guard(headers.get(b"authorization")) if guard else None
        if refusal is not None:
            status, reason = refusal
            await _reply(send, status, reason, [(b"www-authenticate", b"Bearer")] if status == 401 else None)
            return
        limit = self.streamed.get(route) or self.route_limits.get(route, self.default_limit)
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _reply(send, 413, f"request body larger than {limit} bytes")
            return
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if route in self.streamed:
            if encoding != b"identity":
                await _reply(send, 415, "this upload takes no Content-Encoding")
                return
            await self.app(scope, receive, send)
            return
        if encoding not in (b"identity", b"gzip"):
            await _reply(send, 415, "Content-Encoding must be gzip or identity")
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > limit:
                await _reply(send, 413, f"request body larger than {limit} bytes")
                return
            if not message.get("more_body"):
                break
        data = bytes(body)
        if encoding == b"gzip":
            try:
                if len(data) > _THREAD_THRESHOLD:
                    data = await to_thread.run_sync(gunzip, data, self.max_decoded)
                else:
                    data = gunzip(data, self.max_decoded)
            except BodyTooLarge as exc:
                await _reply(send, 413, str(exc))
                return
            except BadEncoding as exc:
                await _reply(send, 400, str(exc))
                return
        kept = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-length", b"content-encoding")]
        scope = dict(scope, headers=kept + [(b"content-length", str(len(data)).encode())])
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reply(send: Send, status: int, detail: str, extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra_headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
