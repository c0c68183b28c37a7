"""Typed agent configuration: defaults, then the TOML file, then DLP_AGENT_* variables.

Validated once at start; every error names the key (``spool.max_bytes``) so an IT
admin can fix a rolled-out config without reading code. Relative paths inside the
file are relative to the file. ``dlp-agent check-config`` prints the result.

The sections are plain dataclasses checked by the small validator below rather than
pydantic models: pydantic and its core cost an idle daemon about 9 MB (issue 22) for
a dozen flat sections read once. Values are taken as pydantic's lax mode took them
(``"500"`` for a number, ``"yes"`` for a flag, as environment variables give them), so
a configuration that loaded before still loads, with the same messages.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin, get_type_hints

from agent.scanning.rules import starter_packs_dir

ENV_PREFIX = "DLP_AGENT_"


class ConfigError(Exception):
    """The configuration is unusable; the message lists every problem."""


class _Invalid(ConfigError):
    """Problems found in one section, as (key within the section, message) pairs; raised when a
    section is made with bad values (``load_config`` names the section's keys from them)."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{key}: {message}" for key, message in problems))
        self.problems = problems


def bounded(default: int | float, *, ge: float | None = None, gt: float | None = None, le: float | None = None) -> Any:
    """A number field with its default and inclusive (``ge``, ``le``) or exclusive (``gt``) bounds."""
    return field(default=default, metadata={"ge": ge, "gt": gt, "le": le})


def strings(*values: str) -> Any:
    """A list-of-strings field whose default is ``values`` (a fresh list per instance)."""
    return field(default_factory=lambda: list(values))


_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("Input should be a valid boolean, unable to interpret input")


_INTEGER_TEXT = re.compile(r"([+-]?[0-9]+)(?:\.0+)?", re.ASCII)


def _to_int(value: Any) -> int:
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        # ASCII digits, optionally a whole ".0": what pydantic took. Python's int() and float()
        # would also take "1e3", "1." and other scripts' digits, which no config means.
        match = _INTEGER_TEXT.fullmatch(value.strip())
        if match is None:
            raise ValueError("Input should be a valid integer, unable to parse string as an integer")
        return int(match.group(1))
    if isinstance(value, float):
        if math.isinf(value):
            raise ValueError("Input should be a finite number")
        if not value.is_integer():
            raise ValueError("Input should be a valid integer, got a number with a fractional part")
        return int(value)
    raise ValueError("Input should be a valid integer")


def _to_float(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            if not text.isascii():
                raise ValueError(text)
            return float(text)
        except ValueError:
            raise ValueError("Input should be a valid number, unable to parse string as a number") from None
    raise ValueError("Input should be a valid number")


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError("Input should be a valid string")


def _check_bounds(value: float, metadata: Mapping[str, Any]) -> None:
    # Written as "not (ok)" so that NaN, which compares false both ways, is refused.
    if metadata.get("gt") is not None and not value > metadata["gt"]:
        raise ValueError(f"Input should be greater than {metadata['gt']}")
    if metadata.get("ge") is not None and not value >= metadata["ge"]:
        raise ValueError(f"Input should be greater than or equal to {metadata['ge']}")
    if metadata.get("le") is not None and not value <= metadata["le"]:
        raise ValueError(f"Input should be less than or equal to {metadata['le']}")


def _coerce(value: Any, kind: Any, metadata: Mapping[str, Any], key: str, problems: list[tuple[str, str]]) -> Any:
    """``value`` as the field's type, or None with the problems (under ``key``) appended."""
    try:
        if get_origin(kind) is Literal:
            choices = [repr(choice) for choice in get_args(kind)]
            if value not in get_args(kind):
                raise ValueError(f"Input should be {', '.join(choices[:-1])} or {choices[-1]}")
            return value
        if get_origin(kind) is list:
            if not isinstance(value, list | tuple):
                raise ValueError("Input should be a valid list")
            items = []
            for index, item in enumerate(value):
                try:
                    items.append(_to_str(item))
                except ValueError as exc:
                    problems.append((f"{key}.{index}", str(exc)))
            return items
        if kind is bool:
            return _to_bool(value)
        if kind is int or kind is float:
            number = _to_int(value) if kind is int else _to_float(value)
            _check_bounds(number, metadata)
            return number
        if kind is str:
            return _to_str(value)
    except ValueError as exc:
        problems.append((key, str(exc)))
        return None
    raise TypeError(f"{key}: no check for fields of type {kind!r}")


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The fields' types, resolved once per class (the annotations are strings here)."""
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


@dataclass(kw_only=True)
class _Section:
    """A section: every field is checked, and taken as its type, whenever one is made."""

    def __post_init__(self) -> None:
        problems: list[tuple[str, str]] = []
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            checked = len(problems)
            value = _coerce(getattr(self, f.name), hints[f.name], f.metadata, f.name, problems)
            if len(problems) == checked:
                setattr(self, f.name, value)
        if problems:
            raise _Invalid(problems)


@dataclass(kw_only=True)
class AgentSection(_Section):
    host: str = ""
    """Host name reported in events; empty means the machine's name."""


@dataclass(kw_only=True)
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
    batch_events: int = bounded(500, ge=1, le=1000)
    timeout_s: float = bounded(30.0, gt=0, le=600)
    """How long one request to the collector may take before it is retried."""


@dataclass(kw_only=True)
class FilesSection(_Section):
    watch: list[str] = strings("~/Desktop", "~/Documents", "~/Downloads")
    exclude: list[str] = strings("**/.cache/**", "**/.git/**", "**/node_modules/**", "**/__pycache__/**", "*.tmp", "*.swp", "*~")
    quiet_ms: int = bounded(1000, ge=50, le=60_000)
    """A file created but never closed (or closed before its folder was watched) is scanned after this quiet time."""
    report_clean: bool = False
    """Also spool routine clean writes (normally only matches and unscannable files are events)."""
    backend: Literal["auto", "fanotify", "inotify"] = "auto"
    """How files are watched on Linux: fanotify (whole-filesystem marks, the writer of each file) where
    permitted, else inotify (one watch per folder, writers unknown); ``auto`` picks fanotify when it can."""


@dataclass(kw_only=True)
class UsbSection(_Section):
    enabled: bool = True
    removable_roots: list[str] = strings("/media", "/run/media")
    poll_interval_ms: int = bounded(1000, ge=100, le=60_000)
    exclude: list[str] = strings()
    """Globs never scanned on removable volumes; empty by default (``[files] exclude`` does not apply there)."""
    writing_quiet_ms: int = bounded(500, ge=50, le=60_000)
    """A file on a removable volume still open for writing is scanned once its writes pause this long."""
    writing_interval_ms: int = bounded(5000, ge=100, le=600_000)
    """A file written without pause is scanned after this long, then after twice as long each time (up to 60 s)."""
    sysfs_root: str = "/sys"
    """Where sysfs is read (a container may mount the host's elsewhere): USB vendor and product ids and serials."""
    on_match: Literal["audit", "quarantine"] = "audit"
    """``quarantine``: a matched file written to a removable volume is moved into the encrypted quarantine."""
    quarantine_dir: str = "quarantine"
    """Where quarantined files are kept, encrypted to the collector's key (0700)."""
    released_dir: str = "released"
    """Where a released file goes when its original folder is gone (0700)."""


@dataclass(kw_only=True)
class ClipboardSection(_Section):
    enabled: bool = True
    interval_ms: int = bounded(500, ge=100, le=60_000)
    max_bytes: int = bounded(1 << 20, ge=1024, le=64 << 20)
    """Kept from older configurations: the text scanned is the larger of this and ``max_scan_bytes``."""
    max_scan_bytes: int = bounded(16 << 20, ge=1 << 20, le=1 << 30)
    """How much of a clipboard text is scanned (in the scanner's overlapping windows); past it, ``truncated``."""
    primary: bool = True
    """Also poll the PRIMARY selection (X11/Wayland: highlighted text, pasted with the middle button)."""
    recent_count: int = bounded(20, ge=0, le=1000)
    """Recent clipboard texts scanned together (0: off), so code copied a few lines at a time is seen whole."""
    recent_max_bytes: int = bounded(256 << 10, ge=1024, le=16 << 20)
    recent_seconds: int = bounded(300, ge=1, le=24 * 3600)
    snippets: bool = False
    """Add a redacted snippet (words masked after their first letter) to each clipboard match."""
    on_match: Literal["audit", "clear"] = "audit"
    """``clear``: text that matched is replaced in its selection by a short notice; ``audit`` only reports."""


@dataclass(kw_only=True)
class ProtectedSection(_Section):
    folders: list[str] = strings()
    """The customer's repositories and document folders on this machine: byte-identical copies
    of their files elsewhere are reported, and writes inside them are not events."""
    refresh_minutes: int = bounded(60, ge=1, le=24 * 60)


@dataclass(kw_only=True)
class EgressSection(_Section):
    enabled: bool = True
    """Watch programs start (Linux: the kernel's process-events connector, CAP_NET_ADMIN) for git
    pushes, new remotes, copies of protected repositories and uploads by scp, sftp, rsync, curl, wget, rclone."""
    git: bool = True
    uploads: bool = True
    upload_tools: list[str] = strings("scp", "sftp", "rsync", "curl", "wget", "rclone")
    """Program names (the executable's base name) whose arguments are read for files and a destination."""
    report: Literal["protected", "all"] = "protected"
    """Which pushes are events: only from repositories holding the customer's code (``protected``:
    in a protected folder, sharing a root commit with one, or matching at HEAD), or every push (``all``)."""
    allowed_remotes: list[str] = strings()
    """Destinations this agent never reports (``host[:port]/path`` globs, ``*`` within one path part and
    ``**`` across; ``/path/**`` for local and file remotes). The collector's per-vendor list applies too."""
    repo_scan_max_bytes: int = bounded(256 << 20, ge=1 << 20, le=64 << 30)
    """How much of a repository's HEAD is scanned to decide whether it holds the customer's code (cached per commit)."""
    repo_scan_max_files: int = bounded(50_000, ge=1, le=10_000_000)
    upload_max_files: int = bounded(10_000, ge=1, le=10_000_000)
    """Files scanned per upload command (folders named are walked up to this many files)."""
    upload_max_events: int = bounded(20, ge=1, le=1000)
    """Events per upload command: one per matching file, up to this many (``transfer`` counts the rest)."""


@dataclass(kw_only=True)
class RulesSection(_Section):
    dir: str = "rules"
    bundle_dir: str = "bundle"
    """Where the last verified bundle from the collector is kept (used at start, even offline)."""
    poll_interval_s: int = bounded(300, ge=5, le=86400)
    """How often the collector is asked for a newer signed bundle (one cheap 304 when unchanged)."""


@dataclass(kw_only=True)
class SpoolSection(_Section):
    path: str = "spool.db"
    max_bytes: int = bounded(104_857_600, ge=1 << 20)


@dataclass(kw_only=True)
class ScanSection(_Section):
    threads: int = bounded(2, ge=1, le=64)
    nice: int = bounded(10, ge=0, le=19)
    queue_size: int = bounded(10_000, ge=10)
    timeout_s: float = bounded(60.0, gt=0)
    max_file_bytes: int = bounded(8 << 30, ge=1)


@dataclass(kw_only=True)
class AgentConfig:
    """The whole agent configuration (keys as in docs/deployment and the public contract)."""

    agent: AgentSection = field(default_factory=AgentSection)
    server: ServerSection = field(default_factory=ServerSection)
    files: FilesSection = field(default_factory=FilesSection)
    usb: UsbSection = field(default_factory=UsbSection)
    clipboard: ClipboardSection = field(default_factory=ClipboardSection)
    protected: ProtectedSection = field(default_factory=ProtectedSection)
    rules: RulesSection = field(default_factory=RulesSection)
    egress: EgressSection = field(default_factory=EgressSection)
    spool: SpoolSection = field(default_factory=SpoolSection)
    scan: ScanSection = field(default_factory=ScanSection)

    source: str | None = None
    """The file this configuration was read from (None: defaults and environment only)."""

    rules_explicit: bool = False
    """Whether ``rules.dir`` was set by the file or environment (else missing means: use the starter packs)."""

    def __post_init__(self) -> None:
        hints = _hints(AgentConfig)
        for name in SECTIONS:
            if not isinstance(getattr(self, name), hints[name]):
                raise TypeError(f"{name}: expected a {hints[name].__name__}, got {getattr(self, name)!r}")
        if self.source:
            self.source = os.path.abspath(self.source)

    def rules_location(self) -> str | None:
        """The rules to load: ``rules.dir``, or the starter packs when the default dir is absent."""
        if self.rules_explicit or os.path.exists(self.rules.dir):
            return self.rules.dir
        return starter_packs_dir()


SECTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(AgentConfig) if f.name not in ("source", "rules_explicit"))
"""The TOML sections, in the order ``check-config`` prints them."""


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
    rules = data.get("rules", {})
    rules_explicit = isinstance(rules, dict) and "dir" in rules
    for reserved in ("source", "rules_explicit"):
        if reserved in data:
            raise ConfigError(f"{path or 'environment'}: unknown section {reserved!r}")
    problems: list[tuple[str, str]] = []
    sections = {name: _section(name, data[name], problems) for name in SECTIONS if name in data}
    problems.extend((name, "Extra inputs are not permitted") for name in data if name not in SECTIONS)
    if problems:
        where = path or "configuration"
        raise ConfigError("\n".join(f"{where}: {key}: {message}" for key, message in problems))
    return _resolve_paths(AgentConfig(**sections, source=path, rules_explicit=rules_explicit))


def _section(name: str, raw: Any, problems: list[tuple[str, str]]) -> Any:
    """Section ``name`` from its TOML table (its defaults, with ``problems`` appended, if invalid)."""
    cls = _hints(AgentConfig)[name]
    if not isinstance(raw, dict):
        problems.append((name, f"Input should be a valid dictionary or instance of {cls.__name__}"))
        return cls()
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = [(f"{name}.{key}", "Extra inputs are not permitted") for key in raw if key not in known]
    try:
        section = cls(**{key: value for key, value in raw.items() if key in known})
    except _Invalid as exc:
        problems.extend((f"{name}.{key}", message) for key, message in exc.problems)
        section = cls()
    problems.extend(unknown)
    return section


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    """``DLP_AGENT_SPOOL_MAX_BYTES=...`` sets ``[spool] max_bytes``; lists take JSON or commas."""
    config_hints = _hints(AgentConfig)
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        rest = key[len(ENV_PREFIX) :].lower()
        for section in SECTIONS:
            prefix = section + "_"
            hints = _hints(config_hints[section])
            if rest.startswith(prefix) and rest[len(prefix) :] in hints:
                name = rest[len(prefix) :]
                value: Any = raw
                if get_origin(hints[name]) is list:
                    value = json.loads(raw) if raw.strip().startswith("[") else [p for p in raw.split(",") if p]
                target = data.setdefault(section, {})
                if isinstance(target, dict):
                    target[name] = value
                break
        else:
            raise ConfigError(f"environment: {key} names no configuration key")


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
    return {name: dataclasses.asdict(getattr(config, name)) for name in SECTIONS}
