"""Typed collector settings: defaults, then ``<data-dir>/server.toml``, then ``DLP_*`` variables.

Validated once at start so a typo in a deployed settings file stops the collector with the
key's name instead of surfacing as a wrong decision later. Every collector process sharing a
PostgreSQL database must be given the same settings; nothing here is negotiated at run time.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.events import Severity

SETTINGS_FILE = "server.toml"


class SettingsError(Exception):
    """The settings are unusable; the message names every bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentsSection(_Section):
    heartbeat_interval_s: int = Field(default=60, ge=5, le=3600)
    """Told to agents at enrollment and in every heartbeat reply."""
    offline_after_s: int = Field(default=300, ge=30, le=7 * 86400)
    """An agent silent this long becomes ``offline`` and raises an ``agent.offline`` event."""
    liveness_flush_s: float = Field(default=2.0, ge=0.1, le=10)
    """Each collector process keeps agents' liveness (last seen, the latest report's counters,
    address counts) in memory and writes it in one batch this often (server/liveness.py); a
    crash loses at most this much of it. Kept far below ``offline_after_s`` (at least 30 s)."""


class IngestSection(_Section):
    max_batch_events: int = Field(default=1000, ge=1, le=10_000)
    max_body_bytes: int = Field(default=8 << 20, ge=64 << 10, le=256 << 20)
    """Largest request body on the wire (gzip or not); larger gets 413 before it is read."""
    max_decoded_bytes: int = Field(default=32 << 20, ge=64 << 10, le=1 << 30)
    """Largest body after gunzip: a gzip bomb stops here with 413."""
    max_event_bytes: int = Field(default=256 << 10, ge=4 << 10, le=16 << 20)
    max_in_flight: int = Field(default=2, ge=1, le=1000)
    """Batches one collector process works on at once; beyond, 429 with a Retry-After before the body is read (server/api/admission.py)."""


class NetworkSection(_Section):
    trusted_proxies: list[str] = Field(default_factory=list)
    """CIDRs of load balancers whose X-Forwarded-For is believed; from anyone else it is ignored."""
    ip_retention_days: int = Field(default=90, ge=1, le=3650)
    """Recorded addresses (agents, logins, events) are deleted after this many days (GDPR)."""
    asn_lookup: bool = True
    """Name the network (AS organisation) of login addresses: session log, unusual-login alerts. Its
    data costs each collector process about 110 MiB from the first login; off, logins are judged
    by country alone."""

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        from server.netaddr import parse_networks

        parse_networks(values)
        return values


class AlertsSection(_Section):
    min_severity: Severity = "high"
    watchlist_min_severity: Severity = "low"
    """The threshold for the events of watchlisted users (server/store/watchlist.py), when lower."""
    webhook_url: str = ""
    webhook_secret: str = ""
    """HMAC key for the ``X-DLP-Signature`` header; empty sends no signature."""
    syslog_host: str = ""
    syslog_port: int = Field(default=514, ge=1, le=65535)
    syslog_protocol: Literal["udp", "tcp", "tls"] = "udp"
    ca_file: str = ""
    max_attempts: int = Field(default=12, ge=1, le=1000)
    """Deliveries back off exponentially (capped at an hour) and give up after this many tries."""


class PeopleSection(_Section):
    """The per-user risk score's window and working hours (server/store/risk.py)."""

    risk_days: int = Field(default=14, ge=1, le=90)
    work_start_hour: int = Field(default=8, ge=0, le=23)
    """Events from this UTC hour on weekdays count as working hours..."""
    work_end_hour: int = Field(default=19, ge=1, le=24)
    """...until this UTC hour (exclusive); the rest, and weekends, are off-hours."""

    @model_validator(mode="after")
    def _hours_in_order(self) -> PeopleSection:
        if self.work_start_hour >= self.work_end_hour:
            raise ValueError("work_start_hour must be before work_end_hour")
        return self


class AuthSection(_Section):
    session_hours: int = Field(default=12, ge=1, le=24 * 30)
    failed_login_limit: int = Field(default=5, ge=1, le=1000)
    """Failed logins for one user name from one address within ``failed_login_window_s`` before
    that pair gets 429; as many failures for the name from anywhere only slow its logins down."""
    failed_login_address_limit: int = Field(default=20, ge=1, le=10_000)
    """Failed logins from one address, whatever the names, before the address gets 429."""
    failed_login_window_s: int = Field(default=900, ge=10, le=86400)
    failed_login_max_delay_s: float = Field(default=5.0, ge=0, le=60)
    """Cap of the wait (doubling from 1 s) before checking a password for a name that failed
    ``failed_login_limit`` times from anywhere; 0 turns the slowdown off."""


MIN_TOKEN_LENGTH = 16


class MetricsSection(_Section):
    token: str = ""
    """Bearer token ``GET /metrics`` requires (``DLP_METRICS_TOKEN`` overrides). Empty: the one in
    ``<data-dir>/metrics.token``, which ``serve`` writes when listening beyond loopback; with
    neither, /metrics is open (server.metrics_access)."""

    @field_validator("token")
    @classmethod
    def _usable(cls, value: str) -> str:
        if value and (len(value) < MIN_TOKEN_LENGTH or not value.isascii() or not value.isprintable() or " " in value):
            raise ValueError(f"must be at least {MIN_TOKEN_LENGTH} printable ASCII characters without spaces")
        return value


class ServerSettings(_Section):
    data_dir: Path
    database_url: str = ""
    """Empty means SQLite at ``<data-dir>/collector.db``; ``DLP_DATABASE_URL`` overrides."""
    agents: AgentsSection = Field(default_factory=AgentsSection)
    ingest: IngestSection = Field(default_factory=IngestSection)
    network: NetworkSection = Field(default_factory=NetworkSection)
    alerts: AlertsSection = Field(default_factory=AlertsSection)
    auth: AuthSection = Field(default_factory=AuthSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    people: PeopleSection = Field(default_factory=PeopleSection)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'collector.db'}"

    @property
    def signing_key_path(self) -> Path:
        return self.data_dir / "signing.key"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("dlp-server", appauthor=False))


def load_settings(data_dir: str | Path | None = None, *, environ: Mapping[str, str] | None = None) -> ServerSettings:
    """Settings for the collector whose files live in ``data_dir``."""
    environ = os.environ if environ is None else environ
    root = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
    raw: dict[str, Any] = {}
    path = root / SETTINGS_FILE
    if path.is_file():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"{path}: {exc}") from exc
    raw["data_dir"] = root
    if environ.get("DLP_DATABASE_URL"):
        raw["database_url"] = environ["DLP_DATABASE_URL"]
    if environ.get("DLP_METRICS_TOKEN") and isinstance(raw.get("metrics", {}), dict):
        raw["metrics"] = {**raw.get("metrics", {}), "token": environ["DLP_METRICS_TOKEN"]}
    try:
        return ServerSettings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise SettingsError(f"{path}: {problems}") from exc


DEFAULT_SETTINGS_TOML = """\
# dlp-server settings. Every collector sharing one database must use the same values.
# database_url = "postgresql://dlp@db.internal/dlp"   # or DLP_DATABASE_URL; default SQLite here

[agents]
heartbeat_interval_s = 60
offline_after_s = 300
liveness_flush_s = 2          # liveness written in batches this often (each collector process)

[network]
trusted_proxies = []          # load balancers whose X-Forwarded-For is believed
ip_retention_days = 90

[alerts]
min_severity = "high"
watchlist_min_severity = "low"   # watchlisted users' events alert from this severity
webhook_url = ""
syslog_host = ""
syslog_port = 514
syslog_protocol = "udp"       # udp | tcp | tls

[metrics]
# token = ""                  # GET /metrics needs "Authorization: Bearer <token>"; or DLP_METRICS_TOKEN.
                              # Unset: serve beyond loopback writes one to metrics.token here.
"""
