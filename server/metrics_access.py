"""Who may read ``/metrics``: anyone on loopback, only a bearer-token holder once the collector is reachable.

Metrics are no secrets, but they map a deployment (agents online, ingest volumes, alert
failures) for whoever asks, so a collector that listens beyond loopback requires a token for
them by default. The token is ``[metrics] token`` (or ``DLP_METRICS_TOKEN``) when set; else
``serve`` on a non-loopback address (or behind a trusted proxy) writes one to
``<data-dir>/metrics.token`` once and keeps it, for Prometheus to read. Only its SHA-256 is
held in memory, and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from server.settings import MIN_TOKEN_LENGTH, ServerSettings, SettingsError

TOKEN_FILE = "metrics.token"


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def ensure_token(settings: ServerSettings, *, host: str) -> Path | None:
    """The token file ``serve`` must use, created (0600) when missing; None when a token is
    configured or the collector is reached only over loopback."""
    if settings.metrics.token or (is_loopback(host) and not settings.network.trusted_proxies):
        return None
    path = settings.data_dir / TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secrets.token_urlsafe(32) + "\n")
    return path


def expected_digest(settings: ServerSettings) -> bytes | None:
    """SHA-256 of the token ``/metrics`` requires, or None when it is open (no token anywhere)."""
    if settings.metrics.token:
        return _digest(settings.metrics.token)
    path = settings.data_dir / TOKEN_FILE
    if not path.exists():
        return None
    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: {exc}") from exc
    if len(token) < MIN_TOKEN_LENGTH:
        # Fail closed: a damaged token file must not open /metrics to everyone.
        raise SettingsError(f"{path}: holds no token of at least {MIN_TOKEN_LENGTH} characters; delete it to have serve write a new one")
    return _digest(token)


def allowed(expected: bytes | None, bearer_token: str | None) -> bool:
    if expected is None:
        return True
    return bearer_token is not None and hmac.compare_digest(_digest(bearer_token), expected)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
