"""USB device control per vendor: the action for unknown sticks, the allowed list, time-limited exceptions.

Every change (a policy set, an exception granted or revoked) bumps the vendor's ``version`` in
the same transaction as its audit entry; agents learn the version from heartbeats and fetch the
signed document when theirs is older. The document is what agents enforce offline, so it is
built deterministically from the stored rows (``issued_at`` is the last change, not the fetch
time): every collector serves the same bytes and the same ETag for a version.
Reading a policy takes the viewer's ``Scope``: a vendor out of scope is not found, like one that
does not exist. Changes are for admins, who see every vendor.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, bindparam, select

from server.db.tables import device_exceptions, device_policies
from server.durations import parse_duration
from server.errors import Conflict, InvalidInput, NotFound
from server.store import audit
from server.store import vendors as vendor_store
from server.store.scope import Scope
from server.store.sql import iso

DOCUMENT_FORMAT = 1
ACTIONS = ("audit", "read-only", "block")
MAX_ALLOWED = 256
"""Allowed entries per vendor: agents match each one against every volume mounted."""
MAX_EXCEPTIONS = 256
"""Exceptions in force at once per vendor."""
MAX_EXCEPTION_LIFETIME = timedelta(days=90)
MAX_SERIAL = 128
MAX_NOTE = 256
MAX_REASON = 1000
_ID_PATTERN = re.compile(r"^[0-9a-f?*]{1,8}$")
_HEX_ID = re.compile(r"^[0-9a-f]{4}$")
DEVICE_FIELDS = ("vendor_id", "product_id", "serial")


def _text(value: Any, what: str, limit: int, *, required: bool = False) -> str:
    text = "" if value is None else value
    if not isinstance(text, str):
        raise InvalidInput(f"{what} must be text")
    text = text.strip()
    if required and not text:
        raise InvalidInput(f"{what} is required")
    if len(text) > limit or not text.isprintable():
        raise InvalidInput(f"{what} must be at most {limit} printable characters")
    return text


def id_pattern(value: Any, what: str) -> str:
    """A USB vendor or product id pattern: four hex digits, or a pattern of hex digits, ``*`` and ``?``
    (case-insensitive, stored lower-case); empty or missing means ``*``."""
    text = _text(value, what, 8).lower() or "*"
    if not _ID_PATTERN.match(text) or len(text.replace("*", "")) > 4 or ("*" not in text and "?" not in text and not _HEX_ID.match(text)):
        raise InvalidInput(f"{what} {text!r} must be 4 hex digits (like 0781) or a pattern of hex digits, * and ?")
    return text


def serial_pattern(value: Any, what: str = "serial") -> str:
    return _text(value, what, MAX_SERIAL) or "*"


def device_entry(entry: dict[str, Any], *, with_note: bool = True) -> dict[str, str]:
    """One allowed device or exception's device, checked and normalised (missing fields: ``*``)."""
    checked = {
        "vendor_id": id_pattern(entry.get("vendor_id"), "vendor_id"),
        "product_id": id_pattern(entry.get("product_id"), "product_id"),
        "serial": serial_pattern(entry.get("serial")),
    }
    if with_note:
        checked["note"] = _text(entry.get("note"), "note", MAX_NOTE)
    return checked


def parse_device(text: str) -> dict[str, str]:
    """``VID:PID:SERIAL`` as admins type it (CLI ``--allow``/``--device``, the UI's allowed list), with
    an optional `` # note``; empty or missing parts are ``*``; the serial may itself hold colons."""
    spec, _, note = text.partition(" # ")
    parts = spec.strip().split(":", 2)
    parts += [""] * (3 - len(parts))
    return device_entry({"vendor_id": parts[0], "product_id": parts[1], "serial": parts[2], "note": note})


_VERSION = select(device_policies.c.version).where(device_policies.c.vendor == bindparam("vendor_id"))
"""Built once: every heartbeat runs it."""


def current_version(conn: Connection, *, vendor_id: int) -> int | None:
    """The vendor's policy version (what heartbeats tell agents), None when it never had one."""
    return conn.execute(_VERSION, {"vendor_id": vendor_id}).scalar_one_or_none()


def _active_exceptions(conn: Connection, vendor_id: int, now: datetime) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(device_exceptions)
        .where(device_exceptions.c.vendor == vendor_id, device_exceptions.c.revoked_at.is_(None), device_exceptions.c.expires_at > now)
        .order_by(device_exceptions.c.id)
    )
    return [_exception_public(row) for row in rows]


def _exception_public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "vendor_id": row.vendor_id,
        "product_id": row.product_id,
        "serial": row.serial,
        "expires_at": iso(row.expires_at),
        "reason": row.reason,
        "granted_by": row.granted_by,
    }


def get_policy(conn: Connection, *, vendor: str, now: datetime, scope: Scope) -> dict[str, Any] | None:
    """The vendor's policy with the exceptions in force at ``now``; None when it has none
    (NotFound when the vendor is out of ``scope``)."""
    vendor_id = vendor_store.id_of(conn, vendor, scope)
    row = conn.execute(select(device_policies).where(device_policies.c.vendor == vendor_id)).first()
    if row is None:
        return None
    return {
        "vendor": vendor,
        "version": row.version,
        "action": row.action,
        "allowed": list(row.allowed),
        "exceptions": _active_exceptions(conn, vendor_id, now),
        "updated_at": iso(row.updated_at),
        "updated_by": row.updated_by,
    }


def _bump(conn: Connection, vendor_id: int, *, actor: str, now: datetime) -> int:
    """The next version of an existing policy, recorded with who changed it and when."""
    version = conn.execute(
        device_policies.update()
        .where(device_policies.c.vendor == vendor_id)
        .values(version=device_policies.c.version + 1, updated_at=now, updated_by=actor)
        .returning(device_policies.c.version)
    ).scalar_one_or_none()
    if version is None:
        raise Conflict("this vendor has no device policy yet: set its action first")
    return version


def set_policy(
    conn: Connection, *, vendor: str, action: str, allowed: list[dict[str, Any]], actor: str, address: str | None, now: datetime
) -> dict[str, Any]:
    """Set the vendor's action and allowed list (audited ``device_policy.set``); exceptions stay."""
    if action not in ACTIONS:
        raise InvalidInput(f"action must be one of {', '.join(ACTIONS)}")
    if len(allowed) > MAX_ALLOWED:
        raise InvalidInput(f"a vendor allows at most {MAX_ALLOWED} device patterns")
    entries = [device_entry(entry) for entry in allowed]
    vendor_id = vendor_store.id_of(conn, vendor)
    if current_version(conn, vendor_id=vendor_id) is None:
        version = 1
        conn.execute(device_policies.insert().values(vendor=vendor_id, action=action, allowed=entries, version=1, updated_at=now, updated_by=actor))
    else:
        version = _bump(conn, vendor_id, actor=actor, now=now)
        conn.execute(device_policies.update().where(device_policies.c.vendor == vendor_id).values(action=action, allowed=entries))
    audit.append(conn, actor=actor, action="device_policy.set", target=vendor, details={"action": action, "allowed": entries, "version": version}, address=address, now=now)
    policy = get_policy(conn, vendor=vendor, now=now, scope=Scope.everything())
    assert policy is not None, "just written"
    return policy


def grant_exception(
    conn: Connection,
    *,
    vendor: str,
    device: dict[str, Any],
    duration: str,
    reason: str,
    actor: str,
    address: str | None,
    now: datetime,
) -> dict[str, Any]:
    """Let one device (patterns as in the allowed list) through for ``duration`` (``4h``, ``2d``)
    from ``now`` (audited ``device_exception.grant``); the vendor needs a policy first."""
    try:
        lifetime = parse_duration(duration)
    except ValueError as exc:
        raise InvalidInput(f"duration: {exc}") from None
    if lifetime > MAX_EXCEPTION_LIFETIME:
        raise InvalidInput(f"an exception lasts at most {MAX_EXCEPTION_LIFETIME.days} days")
    checked = device_entry(device, with_note=False)
    if all(checked[key] == "*" for key in DEVICE_FIELDS):
        raise InvalidInput("an exception is for one device: give its vendor_id, product_id or serial")
    why = _text(reason, "reason", MAX_REASON, required=True)
    vendor_id = vendor_store.id_of(conn, vendor)
    if len(_active_exceptions(conn, vendor_id, now)) >= MAX_EXCEPTIONS:
        raise InvalidInput(f"a vendor has at most {MAX_EXCEPTIONS} exceptions in force; revoke one first")
    version = _bump(conn, vendor_id, actor=actor, now=now)
    row = conn.execute(
        device_exceptions.insert()
        .values(vendor=vendor_id, **checked, expires_at=now + lifetime, reason=why, granted_by=actor, granted_at=now)
        .returning(*device_exceptions.c)
    ).one()
    granted = _exception_public(row)
    audit.append(conn, actor=actor, action="device_exception.grant", target=vendor, details={**granted, "version": version}, address=address, now=now)
    return granted


def revoke_exception(conn: Connection, *, vendor: str, exception_id: int, actor: str, address: str | None, now: datetime) -> dict[str, Any]:
    """End an exception now (audited ``device_exception.revoke``); it leaves the next document."""
    vendor_id = vendor_store.id_of(conn, vendor)
    revoked = conn.execute(
        device_exceptions.update()
        .where(device_exceptions.c.id == exception_id, device_exceptions.c.vendor == vendor_id, device_exceptions.c.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(*device_exceptions.c)
    ).first()
    if revoked is None:
        raise NotFound(f"no exception {exception_id} in force for vendor {vendor!r}")
    version = _bump(conn, vendor_id, actor=actor, now=now)
    details = {**_exception_public(revoked), "version": version}
    audit.append(conn, actor=actor, action="device_exception.revoke", target=vendor, details=details, address=address, now=now)
    return {**_exception_public(revoked), "revoked_at": iso(now), "version": version}


@dataclass(frozen=True)
class SignedPolicy:
    """What ``GET /api/v1/agent/device-policy`` answers: the document text and its signature."""

    document: str
    signature: str
    version: int

    @property
    def etag(self) -> str:
        return hashlib.sha256(self.document.encode()).hexdigest()[:32]


def signed_document(
    conn: Connection, *, vendor: str, signing_key: Ed25519PrivateKey, quarantine_public_key: str, now: datetime
) -> SignedPolicy | None:
    """The vendor's policy as agents get it (exceptions expired at ``now`` left out), signed with the
    collector's bundle key; None when the vendor has no policy."""
    policy = get_policy(conn, vendor=vendor, now=now, scope=Scope.everything())
    if policy is None:
        return None
    document = {
        "format": DOCUMENT_FORMAT,
        "vendor": vendor,
        "version": policy["version"],
        "issued_at": policy["updated_at"],
        "action": policy["action"],
        "allowed": policy["allowed"],
        "exceptions": policy["exceptions"],
        "quarantine_key": quarantine_public_key,
    }
    text = json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return SignedPolicy(text, signing_key.sign(text.encode("utf-8")).hex(), policy["version"])

