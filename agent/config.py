"""Typed agent configuration: defaults, then the TOML file, then DLP_AGENT_* variables.

Validated once at start; every error names the key (``spool.max_bytes``) so an IT
admin can fix a rolled-out config without reading code. Relative paths inside the
file are relative to the file. ``dlp-agent check-config`` prints the result.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.scanning.rules import starter_packs_dir

ENV_PREFIX = "DLP_AGENT_"


class ConfigError(Exception):
    """The configuration is unusable; the message lists every problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AgentSection(_Section):
    host: str = ""
    """Host name reported in events; empty means the machine's name."""


class ServerSection(_Section):
    url: str = ""
    """The collector; empty means the URL given at enrollment."""
    ca_file: str = ""
    """PEM file of CAs to verify the collector against instead of the bundled Mozilla CAs (certifi) or REQUESTS_CA_BUNDLE."""
    client_cert: str = ""
    """Client certificate (PEM) for collectors behind mutual TLS; ``client_key`` if kept apart."""
    client_key: str = ""
    credentials: str = "credentials.json"
    """Written by ``dlp-agent enroll`` (mode 0600): the agent's id and secret."""
    batch_events: int = Field(default=500, ge=1, le=1000)
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    """How long one request to the collector may take before it is retried."""


class FilesSection(_Section):
    watch: list[str] = Field(default_factory=lambda: ["~/Desktop", "~/Documents", "~/Downloads"])
    exclude: list[str] = Field(
        default_factory=lambda: ["**/.cache/**", "**/.git/**", "**/node_modules/**", "**/__pycache__/**", "*.tmp", "*.swp", "*~"]
    )
    quiet_ms: int = Field(default=1000, ge=50, le=60_000)
    """A file created but never closed (or closed before its folder was watched) is scanned after this quiet time."""
    report_clean: bool = False
    """Also spool routine clean writes (normally only matches and unscannable files are events)."""
    backend: Literal["auto", "fanotify", "inotify"] = "auto"
    """How files are watched on Linux: fanotify (whole-filesystem marks, the writer of each file) where
    permitted, else inotify (one watch per folder, writers unknown); ``auto`` picks fanotify when it can."""


class UsbSection(_Section):
    enabled: bool = True
    removable_roots: list[str] = Field(default_factory=lambda: ["/media", "/run/media"])
    poll_interval_ms: int = Field(default=1000, ge=100, le=60_000)
    exclude: list[str] = Field(default_factory=list)
    """Globs never scanned on removable volumes; empty by default (``[files] exclude`` does not apply there)."""
    writing_quiet_ms: int = Field(default=500, ge=50, le=60_000)
    """A file on a removable volume still open for writing is scanned once its writes pause this long."""
    writing_interval_ms: int = Field(default=5000, ge=100, le=600_000)
    """A file written without pause is scanned after this long, then after twice as long each time (up to 60 s)."""
    sysfs_root: str = "/sys"
    """Where sysfs is read (a container may mount the host's elsewhere): USB vendor and product ids and serials."""
    on_match: Literal["audit", "quarantine"] = "audit"
    """``quarantine``: a matched file written to a removable volume is moved into the encrypted quarantine."""
    quarantine_dir: str = "quarantine"
    """Where quarantined files are kept, encrypted to the collector's key (0700)."""
    released_dir: str = "released"
    """Where a released file goes when its original folder is gone (0700)."""


class ClipboardSection(_Section):
    enabled: bool = True
    interval_ms: int = Field(default=500, ge=100, le=60_000)
    max_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    """Kept from older configurations: the text scanned is the larger of this and ``max_scan_bytes``."""
    max_scan_bytes: int = Field(default=16 << 20, ge=1 << 20, le=1 << 30)
    """How much of a clipboard text is scanned (in the scanner's overlapping windows); past it, ``truncated``."""
    primary: bool = True
    """Also poll the PRIMARY selection (X11/Wayland: highlighted text, pasted with the middle button)."""
    recent_count: int = Field(default=20, ge=0, le=1000)
    """Recent clipboard texts scanned together (0: off), so code copied a few lines at a time is seen whole."""
    recent_max_bytes: int = Field(default=256 << 10, ge=1024, le=16 << 20)
    recent_seconds: int = Field(default=300, ge=1, le=24 * 3600)
    snippets: bool = False
    """Add a redacted snippet (words masked after their first letter) to each clipboard match."""
    on_match: Literal["audit", "clear"] = "audit"
    """``clear``: text that matched is replaced in its selection by a short notice; ``audit`` only reports."""


class ProtectedSection(_Section):
    folders: list[str] = Field(default_factory=list)
    """The customer's repositories and document folders on this machine: byte-identical copies
    of their files elsewhere are reported, and writes inside them are not events."""
    refresh_minutes: int = Field(default=60, ge=1, le=24 * 60)


class EgressSection(_Section):
    enabled: bool = True
    """Watch programs start (Linux: the kernel's process-events connector, CAP_NET_ADMIN) for git
    pushes, new remotes, copies of protected repositories and uploads by scp, sftp, rsync, curl, wget, rclone."""
    git: bool = True
    uploads: bool = True
    upload_tools: list[str] = Field(default_factory=lambda: ["scp", "sftp", "rsync", "curl", "wget", "rclone"])
    """Program names (the executable's base name) whose arguments are read for files and a destination."""
    report: Literal["protected", "all"] = "protected"
    """Which pushes are events: only from repositories holding the customer's code (``protected``:
    in a protected folder, sharing a root commit with one, or matching at HEAD), or every push (``all``)."""
    allowed_remotes: list[str] = Field(default_factory=list)
    """Destinations this agent never reports (``host[:port]/path`` globs, ``*`` within one path part and
    ``**`` across; ``/path/**`` for local and file remotes). The collector's per-vendor list applies too."""
    repo_scan_max_bytes: int = Field(default=256 << 20, ge=1 << 20, le=64 << 30)
    """How much of a repository's HEAD is scanned to decide whether it holds the customer's code (cached per commit)."""
    repo_scan_max_files: int = Field(default=50_000, ge=1, le=10_000_000)
    upload_max_files: int = Field(default=10_000, ge=1, le=10_000_000)
    """Files scanned per upload command (folders named are walked up to this many files)."""
    upload_max_events: int = Field(default=20, ge=1, le=1000)
    """Events per upload command: one per matching file, up to this many (``transfer`` counts the rest)."""


class RulesSection(_Section):
    dir: str = "rules"
    bundle_dir: str = "bundle"
    """Where the last verified bundle from the collector is kept (used at start, even offline)."""
    poll_interval_s: int = Field(default=300, ge=5, le=86400)
    """How often the collector is asked for a newer signed bundle (one cheap 304 when unchanged)."""


class SpoolSection(_Section):
    path: str = "spool.db"
    max_bytes: int = Field(default=104_857_600, ge=1 << 20)


class ScanSection(_Section):
    threads: int = Field(default=2, ge=1, le=64)
    nice: int = Field(default=10, ge=0, le=19)
    queue_size: int = Field(default=10_000, ge=10)
    timeout_s: float = Field(default=60.0, gt=0)
    max_file_bytes: int = Field(default=8 << 30, ge=1)


class AgentConfig(_Section):
    """The whole agent configuration (keys as in docs/deployment and the public contract)."""

    agent: AgentSection = Field(default_factory=AgentSection)
    server: ServerSection = Field(default_factory=ServerSection)
    files: FilesSection = Field(default_factory=FilesSection)
    usb: UsbSection = Field(default_factory=UsbSection)
    clipboard: ClipboardSection = Field(default_factory=ClipboardSection)
    protected: ProtectedSection = Field(default_factory=ProtectedSection)
    rules: RulesSection = Field(default_factory=RulesSection)
    egress: EgressSection = Field(default_factory=EgressSection)
    spool: SpoolSection = Field(default_factory=SpoolSection)
    scan: ScanSection = Field(default_factory=ScanSection)

    source: str | None = None
    """The file this configuration was read from (None: defaults and environment only)."""

    rules_explicit: bool = False
    """Whether ``rules.dir`` was set by the file or environment (else missing means: use the starter packs)."""

    def rules_location(self) -> str | None:
        """The rules to load: ``rules.dir``, or the starter packs when the default dir is absent."""
        if self.rules_explicit or os.path.exists(self.rules.dir):
            return self.rules.dir
        return starter_packs_dir()

    @field_validator("source")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return os.path.abspath(value) if value else value


def load_config(path: str | None = None, *, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read, layer, validate and resolve the configuration.

    Raises:
        ConfigError: unreadable file, TOML syntax, unknown keys or bad values.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    _apply_environment(data, environ)
    rules_explicit = "dir" in data.get("rules", {})
    for reserved in ("source", "rules_explicit"):
        if reserved in data:
            raise ConfigError(f"{path or 'environment'}: unknown section {reserved!r}")
    try:
        config = AgentConfig.model_validate({**data, "source": path, "rules_explicit": rules_explicit})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    return _resolve_paths(config)


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    """``DLP_AGENT_SPOOL_MAX_BYTES=...`` sets ``[spool] max_bytes``; lists take JSON or commas."""
    sections = {name: type(field.get_default(call_default_factory=True)) for name, field in AgentConfig.model_fields.items() if field.default_factory}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        rest = key[len(ENV_PREFIX) :].lower()
        for section, model in sections.items():
            prefix = section + "_"
            if rest.startswith(prefix) and rest[len(prefix) :] in model.model_fields:
                field = rest[len(prefix) :]
                value: Any = raw
                if model.model_fields[field].annotation == list[str]:
                    value = json.loads(raw) if raw.strip().startswith("[") else [p for p in raw.split(",") if p]
                data.setdefault(section, {})[field] = value
                break
        else:
            raise ConfigError(f"environment: {key} names no configuration key")


def _describe(exc: ValidationError, path: str | None) -> str:
    where = path or "configuration"
    lines = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"])
        lines.append(f"{where}: {key}: {error['msg']}")
    return "\n".join(lines)


def _resolve_paths(config: AgentConfig) -> AgentConfig:
    base = os.path.dirname(config.source) if config.source else os.getcwd()

    def resolve(value: str) -> str:
        if not value:
            return value
        return os.path.normpath(os.path.join(base, os.path.expanduser(value)))

    config.files.watch = [resolve(p) for p in config.files.watch]
    config.usb.removable_roots = [resolve(p) for p in config.usb.removable_roots]
    config.usb.sysfs_root = resolve(config.usb.sysfs_root)
    config.usb.quarantine_dir = resolve(config.usb.quarantine_dir)
    config.usb.released_dir = resolve(config.usb.released_dir)
    config.rules.dir = resolve(config.rules.dir)
    config.rules.bundle_dir = resolve(config.rules.bundle_dir)
    config.protected.folders = [resolve(p) for p in config.protected.folders]
    config.spool.path = resolve(config.spool.path)
    config.server.ca_file = resolve(config.server.ca_file)
    config.server.client_cert = resolve(config.server.client_cert)
    config.server.client_key = resolve(config.server.client_key)
    config.server.credentials = resolve(config.server.credentials)
    return config


def effective(config: AgentConfig) -> dict[str, Any]:
    """The configuration as ``check-config`` prints it."""
    return config.model_dump(exclude={"source", "rules_explicit"})
