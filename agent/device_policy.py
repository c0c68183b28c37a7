"""The collector's device policy on the agent: the signed document, its matching, and the copy kept on disk.

The collector decides per vendor which USB sticks are allowed and what happens to every other
removable volume (``audit``, ``read-only``, ``block``); docs/device-control.md has the format.
The document arrives as a JSON string and an Ed25519 signature of its UTF-8 bytes, by the key
that signs rule bundles (``credentials.signing_public_key``). Nothing in it is believed before
that signature, the vendor and the version (never lower than the one held: no rollback) are
checked, and the copy on disk is checked again when it is loaded, so an agent started without
its collector enforces the last policy it was given, and a file edited on disk enforces nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import json
import logging
import os
import threading
from typing import Any, Literal, cast

from agent import ed25519
from agent.atomic import write_atomically
from agent.private import tighten_file
from agent.sources.work import Device

log = logging.getLogger(__name__)

FORMAT = 1
POLICY_FILE = "device-policy.json"
MAX_DOCUMENT_BYTES = 1 << 20
"""A policy is a few allow entries and exceptions; anything larger is refused before parsing."""
MAX_ENTRIES = 10_000
Action = Literal["audit", "read-only", "block"]
ACTIONS: tuple[Action, ...] = ("audit", "read-only", "block")
DEVICE_KEYS = ("vendor_id", "product_id", "serial")


class DevicePolicyError(Exception):
    """A document this agent must not enforce; the message says why."""


@dataclasses.dataclass(frozen=True)
class DeviceRule:
    """An allow entry or an exception: patterns for a device's USB identity (None: any)."""

    vendor_id: str | None = None
    product_id: str | None = None
    serial: str | None = None
    note: str = ""
    expires_at: float | None = None
    """Exceptions only: when it stops applying (epoch seconds)."""
    exception_id: int | None = None

    def matches(self, device: Device) -> bool:
        return all(_match(getattr(self, key), getattr(device, key)) for key in DEVICE_KEYS)

    def describe(self) -> str:
        """``vid:pid:serial`` as the collector's CLI spells it, for the event's ``rule``."""
        return ":".join(getattr(self, key) or "*" for key in DEVICE_KEYS)


@dataclasses.dataclass(frozen=True)
class DevicePolicy:
    vendor: str
    version: int
    action: Action
    allowed: tuple[DeviceRule, ...]
    exceptions: tuple[DeviceRule, ...]
    quarantine_key: str | None
    """Hex X25519 public key of the collector: what quarantined files are encrypted to."""
    issued_at: str


AUDIT = DevicePolicy(vendor="", version=0, action="audit", allowed=(), exceptions=(), quarantine_key=None, issued_at="")
"""What an agent without any policy does: reports volumes as it always did."""


def _match(pattern: str | None, value: str | None) -> bool:
    """fnmatch, case-insensitive; ``*`` (or no pattern) matches an unknown value too, any other pattern needs one."""
    if pattern is None or pattern == "*":
        return True
    if value is None:
        return False
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def decide(policy: DevicePolicy, device: Device, now: float) -> tuple[Action | Literal["allow"], dict[str, Any] | None]:
    """What to do with ``device``: ``("allow", enforcement)`` for an allowed device or a live exception,
    ``(policy.action, None)`` otherwise (``audit`` included: nothing to do)."""
    if policy.action == "audit":
        return "audit", None
    for rule in policy.allowed:
        if rule.matches(device):
            return "allow", {"action": "allow", "mode": "enforce", "done": True, "detail": rule.note or None, "rule": f"allowed {rule.describe()}"}
    for rule in policy.exceptions:
        if rule.expires_at is not None and rule.expires_at > now and rule.matches(device):
            return "allow", {
                "action": "allow", "mode": "enforce", "done": True, "detail": rule.note or None,
                "rule": f"exception {rule.exception_id} {rule.describe()}", "expires_at": _iso(rule.expires_at),
            }  # fmt: skip
    return policy.action, None


def verify(document: str, signature: str, *, public_key_hex: str, vendor: str | None, held_version: int = 0) -> DevicePolicy:
    """The policy in ``document`` once its signature, vendor and version check out.

    Raises:
        DevicePolicyError: bad signature, another vendor, a version lower than ``held_version``,
            or a document that is not a device policy.
    """
    try:
        raw = document.encode("utf-8")
    except UnicodeEncodeError:
        raise DevicePolicyError("device policy is not valid UTF-8 text") from None
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise DevicePolicyError(f"device policy of {len(raw)} bytes is larger than {MAX_DOCUMENT_BYTES}")
    try:
        verified = ed25519.verify(bytes.fromhex(public_key_hex), bytes.fromhex(signature), raw)
    except (ValueError, TypeError):
        verified = False
    if not verified:
        raise DevicePolicyError("device policy signature does not verify with the collector's signing key")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise DevicePolicyError(f"device policy is not JSON: {exc}") from None
    policy = _parse(data)
    if vendor is not None and policy.vendor != vendor:
        raise DevicePolicyError(f"device policy is for vendor {policy.vendor!r}, not {vendor!r}")
    if policy.version < held_version:
        raise DevicePolicyError(f"device policy version {policy.version} is older than version {held_version} in force")
    return policy


def _parse(data: Any) -> DevicePolicy:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DevicePolicyError(f"not a device policy of format {FORMAT}")
    version, action, vendor = data.get("version"), data.get("action"), data.get("vendor")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DevicePolicyError("device policy without a positive version")
    if action not in ACTIONS:
        raise DevicePolicyError(f"device policy action {action!r} is none of {', '.join(ACTIONS)}")
    if not isinstance(vendor, str):
        raise DevicePolicyError("device policy without a vendor")
    allowed, exceptions = data.get("allowed", []), data.get("exceptions", [])
    if not isinstance(allowed, list) or not isinstance(exceptions, list) or len(allowed) + len(exceptions) > MAX_ENTRIES:
        raise DevicePolicyError("device policy allowed/exceptions are not lists (or hold too many entries)")
    key = data.get("quarantine_key")
    if key is not None and not (isinstance(key, str) and len(key) == 64 and _is_hex(key)):
        raise DevicePolicyError("device policy quarantine_key is not a hex X25519 public key")
    return DevicePolicy(
        vendor=vendor,
        version=version,
        action=cast(Action, action),
        allowed=tuple(_rule(entry, exception=False) for entry in allowed),
        exceptions=tuple(_rule(entry, exception=True) for entry in exceptions),
        quarantine_key=key,
        issued_at=str(data.get("issued_at", "")),
    )


def _rule(entry: Any, *, exception: bool) -> DeviceRule:
    if not isinstance(entry, dict):
        raise DevicePolicyError("a device policy entry is not an object")
    patterns: dict[str, str | None] = {}
    for key in DEVICE_KEYS:
        value = entry.get(key)
        if value is not None and not isinstance(value, str):
            raise DevicePolicyError(f"device policy entry {key} is not text")
        patterns[key] = value
    note = entry.get("reason" if exception else "note") or ""
    if not exception:
        return DeviceRule(patterns["vendor_id"], patterns["product_id"], patterns["serial"], note=str(note)[:200])
    try:
        expires = dt.datetime.fromisoformat(str(entry["expires_at"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        raise DevicePolicyError("device exception without a valid expires_at") from None
    identifier = entry.get("id")
    return DeviceRule(patterns["vendor_id"], patterns["product_id"], patterns["serial"], note=str(note)[:200], expires_at=expires, exception_id=identifier if isinstance(identifier, int) else None)


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class PolicyStore:
    """The last verified policy on disk (``device-policy.json`` beside the bundle): the document and
    signature as received, so loading it verifies it again; 0600, replaced atomically."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, POLICY_FILE)

    def load(self, *, public_key_hex: str, vendor: str | None) -> tuple[DevicePolicy, str] | None:
        """The stored policy and its ETag, verified again; None when there is none.

        Raises:
            DevicePolicyError: the stored copy no longer verifies (edited on disk, or another collector's).
        """
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read(2 * MAX_DOCUMENT_BYTES + 4096)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DevicePolicyError(f"{self.path}: {exc.strerror}") from None
        tighten_file(self.path)
        try:
            stored = json.loads(raw)
            document, signature, etag = str(stored["document"]), str(stored["signature"]), str(stored.get("etag", ""))
        except (ValueError, KeyError, TypeError):
            raise DevicePolicyError(f"{self.path}: not a stored device policy") from None
        return verify(document, signature, public_key_hex=public_key_hex, vendor=vendor), etag

    def save(self, document: str, signature: str, etag: str) -> None:
        write_atomically(self.path, json.dumps({"document": document, "signature": signature, "etag": etag}).encode())


class PolicyHolder:
    """The policy in force, shared by the threads that read it (mount decisions, quarantine) and the one that replaces it."""

    def __init__(self, policy: DevicePolicy = AUDIT, etag: str = "") -> None:
        self._lock = threading.Lock()
        self._policy = policy
        self.etag = etag
        self._problems: dict[str, str] = {}

    @property
    def policy(self) -> DevicePolicy:
        with self._lock:
            return self._policy

    def replace(self, policy: DevicePolicy, etag: str) -> None:
        with self._lock:
            self._policy, self.etag = policy, etag
            self._problems.clear()

    def note(self, kind: str, problem: str | None) -> None:
        """Record (or clear, with None) a problem of one ``kind`` (``stored``, ``fetch``) for the health."""
        with self._lock:
            if problem is None:
                self._problems.pop(kind, None)
            else:
                self._problems[kind] = problem

    def health(self) -> dict[str, str]:
        policy = self.policy
        held = f"device policy version {policy.version}: {policy.action}" if policy.version else "no device policy: audit"
        with self._lock:
            problems = "; ".join(self._problems.values())
        if problems:
            return {"state": "degraded", "message": f"{held}; {problems}"}
        return {"state": "ok", "message": held}
