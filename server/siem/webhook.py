"""A sender that POSTs each event as JSON to a webhook, optionally signed with HMAC-SHA256."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import threading
import urllib.parse
from types import TracebackType
from typing import Any, Self

import requests

from server.siem.errors import DeliveryError

PRODUCT = "dlp-endpoint"
SIGNATURE_HEADER = "X-DLP-Signature"


class WebhookSender:
    """POSTs ``{"event": ..., "product": "dlp-endpoint", "version": ...}`` to one URL.

    Only a 2xx answer counts as delivered. Redirects are not followed: a receiver
    that moved should be reconfigured, and following one would carry the signed
    event and the auth headers to wherever the redirect points.

    Error messages name the destination by scheme, host and port only, because
    many webhook URLs (Slack, Teams) carry their secret in the path.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        headers: dict[str, str] | None = None,
        ca_file: str | None = None,
        secret: str | None = None,
    ):
        """Check the settings; nothing touches the network until the first send.

        Args:
            timeout: seconds to connect, and again to wait for the answer.
            headers: sent with every request (an ``Authorization`` header, say).
            ca_file: PEM certificates to verify an https receiver against, instead of the system store.
            secret: key for the ``X-DLP-Signature: sha256=<hex>`` HMAC of the exact body bytes.

        Raises:
            ValueError: a URL that is not http(s) with a host, an empty secret, or a CA file that cannot be loaded.
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("webhook URL must be http:// or https:// with a host")
        if secret is not None and not secret:
            raise ValueError("webhook secret must not be empty; leave it out to send unsigned")
        if ca_file is not None:
            _check_ca_file(ca_file)
        self._url = url
        self._timeout = timeout
        self._secret = secret.encode() if secret else None
        self._verify: str | bool = ca_file if ca_file is not None else True
        self._destination = f"webhook {parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        self._session = requests.Session()
        self._session.headers.update(headers or {})
        # requests' Session is not documented as thread-safe; alerts are few, so one at a time costs nothing.
        self._lock = threading.Lock()

    def send(self, event: dict[str, Any], *, product_version: str) -> None:
        """POST one event and return once the receiver answered 2xx.

        Raises:
            DeliveryError: no connection, a timeout, or any answer other than 2xx (redirects included).
        """
        body = json.dumps({"event": event, "product": PRODUCT, "version": product_version}).encode()
        headers = {"Content-Type": "application/json", "User-Agent": f"{PRODUCT}/{product_version}"}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()
        with self._lock:
            try:
                response = self._session.post(
                    self._url,
                    data=body,
                    headers=headers,
                    timeout=self._timeout,
                    verify=self._verify,
                    allow_redirects=False,
                )
            except requests.Timeout:
                raise DeliveryError(f"{self._destination}: no answer within {self._timeout}s") from None
            except requests.RequestException as exc:
                # The library's own message quotes the URL, path and all, so only its kind is kept.
                raise DeliveryError(f"{self._destination}: {type(exc).__name__}") from None
        with response:
            if not 200 <= response.status_code < 300:
                raise DeliveryError(f"{self._destination} answered HTTP {response.status_code}")

    def close(self) -> None:
        """Close pooled connections; a later send opens new ones."""
        with self._lock:
            self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def _check_ca_file(ca_file: str) -> None:
    """Fail at start-up on a CA file requests would only reject at the first alert."""
    try:
        ssl.create_default_context(cafile=ca_file)
    except OSError as exc:
        raise ValueError(f"cannot load CA certificates from {ca_file}: {exc}") from exc
