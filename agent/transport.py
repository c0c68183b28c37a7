"""HTTP to the collector: the only code in the agent that touches the network.

Every answer becomes a ``Reply`` whose ``kind`` tells the shipper what to do, so retry
policy lives in one place (the shipper) and HTTP details in another (here). TLS is verified
against ``[server] ca_file`` or, without one, certifi's Mozilla CAs (REQUESTS_CA_BUNDLE when set); a client certificate is sent when set.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from agent import __version__
from agent.private import create_private_file

if TYPE_CHECKING:
    # requests (with urllib3, charset_normalizer and idna) is imported at the first call to the
    # collector, not with this module: about 7 MB of RSS an agent not yet enrolled never needs (issue 22).
    import requests

ReplyKind = Literal["ok", "retry", "too_large", "rejected", "auth", "unchanged", "none"]
_MAX_RETRY_AFTER_S = 3600.0
MAX_DEVICE_POLICY_BYTES = 4 << 20
MAX_REPLY_BYTES = 16 << 20
"""Any other answer (a heartbeat's commands, a batch's duplicates, an error's detail), after decoding:
whoever answers in the collector's place must not make the agent hold an unbounded body."""
"""A signed device policy (a document of at most 1 MiB, JSON-escaped, and its signature)."""


@dataclass(frozen=True)
class Reply:
    kind: ReplyKind
    detail: str = ""
    retry_after: float | None = None
    """Seconds the collector asked us to wait (429/503 Retry-After)."""
    status: int | None = None
    """The HTTP status of a retry with a Retry-After: the shipper waits out only a 429's in full
    (the collector pacing a backlog), never a 503's, which a proxy or load balancer may send."""
    body: dict[str, Any] | None = None
    content: bytes = b""
    etag: str = ""


class TransportError(Exception):
    """A call that cannot be retried into success (enrollment refused, bad URL)."""


class CollectorClient:
    def __init__(
        self,
        base_url: str,
        *,
        credential: str = "",
        ca_file: str = "",
        client_cert: str = "",
        client_key: str = "",
        timeout_s: float = 30.0,
    ) -> None:
        if not base_url.startswith(("https://", "http://")):
            raise TransportError(f"collector URL must start with https:// or http://, not {base_url[:40]!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = (min(10.0, timeout_s), timeout_s)
        # Passed with every request: a session-level verify loses to REQUESTS_CA_BUNDLE in the
        # environment, and the configured CA must win.
        self._verify: str | bool = ca_file or True
        self._cert: str | tuple[str, str] | None = ((client_cert, client_key) if client_key else client_cert) if client_cert else None
        self._credential = credential
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()

    @property
    def session(self) -> requests.Session:
        """The HTTP session, made at the first call (see the import note at the top)."""
        with self._session_lock:
            if self._session is None:
                import requests

                session = requests.Session()
                session.headers["User-Agent"] = f"dlp-agent/{__version__}"
                if self._cert is not None:
                    session.cert = self._cert
                if self._credential:
                    session.headers["Authorization"] = f"Bearer {self._credential}"
                self._session = session
            return self._session

    def set_credential(self, credential: str) -> None:
        with self._session_lock:
            self._credential = credential
            if self._session is None:
                return
            if credential:
                self._session.headers["Authorization"] = f"Bearer {credential}"
            else:
                self._session.headers.pop("Authorization", None)

    def close(self) -> None:
        with self._session_lock:
            if self._session is not None:
                self._session.close()

    def enroll(self, token: str, facts: dict[str, str]) -> dict[str, Any]:
        reply = self._post("/api/v1/enroll", json.dumps({"token": token, **facts}).encode(), gzipped=False)
        if reply.kind != "ok" or reply.body is None:
            raise TransportError(f"enrollment refused: {reply.detail}")
        return reply.body

    def post_events(self, events: list[dict[str, Any]]) -> Reply:
        body = gzip.compress(json.dumps({"events": events}, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), compresslevel=5)
        return self._post("/api/v1/events", body, gzipped=True)

    def heartbeat(self, report: dict[str, Any]) -> Reply:
        return self._post("/api/v1/heartbeat", json.dumps(report).encode(), gzipped=False)

    def get_signatures(self, etag: str | None, *, max_bytes: int, sink: str | None = None) -> Reply:
        """The signed bundle: ``ok`` with ``content`` and ``etag``, ``unchanged`` (304), or ``none`` (404).

        A body over ``max_bytes`` (after any Content-Encoding) is ``too_large`` and not read further:
        what an unverified download may cost in memory is bounded here, before any check. With
        ``sink`` (a path) the body is written there instead of held in ``content`` (a bundle with
        fingerprint indexes is hundreds of megabytes); a refused download leaves no file.
        """

        def take(response: requests.Response) -> Reply:
            if sink is not None:
                if not _save_capped(response, max_bytes, sink):
                    return Reply("too_large", f"signature bundle from {self.base_url} is larger than {max_bytes} bytes")
                return Reply("ok", etag=_etag(response))
            content = _read_capped(response, max_bytes)
            if content is None:
                return Reply("too_large", f"signature bundle from {self.base_url} is larger than {max_bytes} bytes")
            return Reply("ok", content=content, etag=_etag(response))

        return self._fetch("/api/v1/signatures", etag, "signatures", take)

    def get_device_policy(self, etag: str | None, *, max_bytes: int = MAX_DEVICE_POLICY_BYTES) -> Reply:
        """The vendor's signed device policy: ``ok`` with ``body`` (``document``, ``signature``) and
        ``etag``, ``unchanged`` (304), or ``none`` (404: the vendor has none). The body is read up to
        ``max_bytes`` only; the caller verifies it (agent/device_policy.py)."""

        def take(response: requests.Response) -> Reply:
            content = _read_capped(response, max_bytes)
            if content is None:
                return Reply("too_large", f"device policy from {self.base_url} is larger than {max_bytes} bytes")
            try:
                body = json.loads(content)
            except ValueError:
                return Reply("retry", "device policy answer is not JSON")
            if not isinstance(body, dict):
                return Reply("retry", "device policy answer is not an object")
            return Reply("ok", body=body, etag=_etag(response))

        return self._fetch("/api/v1/agent/device-policy", etag, "the device policy", take)

    def _fetch(self, path: str, etag: str | None, what: str, take: Callable[[requests.Response], Reply]) -> Reply:
        """A conditional GET: ``unchanged`` (304), ``none`` (404), ``take(response)`` for a 200, else classified."""
        import requests

        headers = {"If-None-Match": f'"{etag}"'} if etag else {}
        try:
            with self.session.get(
                self.base_url + path, headers=headers, timeout=self.timeout, allow_redirects=False, verify=self._verify, stream=True
            ) as response:
                if response.status_code == 304:
                    return Reply("unchanged")
                if response.status_code == 404:
                    return Reply("none", _detail(_read_capped(response, MAX_REPLY_BYTES) or b""))
                if response.status_code != 200:
                    return _classify(response)
                return take(response)
        except requests.exceptions.RequestException as exc:
            return Reply("retry", f"cannot fetch {what} from {self.base_url} ({_reason(exc)})")

    def _post(self, path: str, body: bytes, *, gzipped: bool) -> Reply:
        import requests

        headers = {"Content-Type": "application/json"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        try:
            with self.session.post(
                self.base_url + path, data=body, headers=headers, timeout=self.timeout, allow_redirects=False, verify=self._verify, stream=True
            ) as response:
                return _classify(response)
        except requests.exceptions.SSLError as exc:
            return Reply("retry", f"TLS to {self.base_url} failed ({_reason(exc)}); check [server] ca_file")
        except requests.exceptions.Timeout:
            return Reply("retry", f"{self.base_url} did not answer within {self.timeout[1]:.0f} s")
        except requests.exceptions.RequestException as exc:
            return Reply("retry", f"cannot reach {self.base_url} ({_reason(exc)})")


def _classify(response: requests.Response) -> Reply:
    """The reply for an answer read as a stream: its body read up to ``MAX_REPLY_BYTES`` only."""
    status = response.status_code
    content = _read_capped(response, MAX_REPLY_BYTES)
    if content is None:
        return Reply("retry", f"HTTP {status} with an answer larger than {MAX_REPLY_BYTES} bytes: not read")
    detail = f"HTTP {status}: {_detail(content)}"
    if 200 <= status < 300:
        try:
            return Reply("ok", body=json.loads(content))
        except ValueError:
            return Reply("retry", f"HTTP {status} with a body that is not JSON")
    if status in (401, 403):
        return Reply("auth", detail)
    if status == 413:
        return Reply("too_large", detail)
    if status in (400, 422):
        return Reply("rejected", detail)
    if status in (429, 503):
        return Reply("retry", detail, retry_after=_retry_after(response.headers.get("Retry-After")), status=status)
    return Reply("retry", detail)


def _read_capped(response: requests.Response, max_bytes: int) -> bytes | None:
    """The body, or None as soon as it exceeds ``max_bytes``."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes and "Content-Encoding" not in response.headers:
        return None
    body = bytearray()
    for chunk in response.iter_content(chunk_size=1 << 16):
        body += chunk
        if len(body) > max_bytes:
            return None
    return bytes(body)


def _save_capped(response: requests.Response, max_bytes: int, path: str) -> bool:
    """Write the body to ``path`` (0600); False, and no file, as soon as it exceeds ``max_bytes``."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes and "Content-Encoding" not in response.headers:
        return False
    create_private_file(path)
    written = 0
    try:
        with open(path, "wb") as out:
            for chunk in response.iter_content(chunk_size=1 << 20):
                written += len(chunk)
                if written > max_bytes:
                    break
                out.write(chunk)
    except BaseException:
        os.unlink(path)
        raise
    if written > max_bytes:
        os.unlink(path)
        return False
    return True


def _etag(response: requests.Response) -> str:
    return response.headers.get("ETag", "").strip('"')


def _detail(content: bytes) -> str:
    try:
        detail = json.loads(content).get("detail", "")
    except (ValueError, AttributeError):
        detail = content[:2000].decode("utf-8", "replace")
    return (json.dumps(detail) if not isinstance(detail, str) else detail)[:500]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        import email.utils

        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, min(seconds, _MAX_RETRY_AFTER_S))


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text[-200:] if text else type(exc).__name__
