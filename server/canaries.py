"""Canary files: mint a decoy for a vendor's seat and put its rule into that vendor's signed bundle.

Each vendor has one pack, ``canaries-<vendor>``, published for that vendor only and rebuilt from
every canary it was given each time a new one is minted, so a later canary never drops an earlier
one's rule. A rule names its mark (meta ``mark``) and recognises its secret by the secret's SHA-256:
a regular expression finds every string of the secret's form and the hash module keeps only the
one whose digest matches. The pack therefore never holds a secret, and a vendor who reads its own
bundle learns nothing that would let it strip or forge a decoy.

Minting, the rebuilt pack, the new signature version and both audit entries commit in one
transaction: a pack that does not compile, or a concurrent publish on PostgreSQL (the version
number's key), leaves no mark behind without its rule.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from agent.bundle import PACK_NAME
from agent.marks.payload import MARK_ID_PATTERN
from server import decoys
from server.db.tables import signature_packs
from server.errors import InvalidInput
from server.store import audit, marks
from server.store import signatures as signature_store

PACK_PREFIX = "canaries-"
SECRET_PATTERNS = {"code": r"/DLPC1-[A-Z2-7]{26}/", "document": r"/DLPC1-[A-Z2-7]{26}/", "credential": r"/AKIA[A-Z2-7]{16}/"}
assert SECRET_PATTERNS.keys() == set(decoys.KINDS)
"""The form of each kind's secret (agent/marks/payload.py CANARY_RE). ASCII only: the hash of a
UTF-16 match would be over other bytes than the secret's."""
FORMATS = {"code": "code", "document": "docx", "credential": "text"}
assert FORMATS.keys() == set(decoys.KINDS)
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_MARK_ID = re.compile(MARK_ID_PATTERN)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Canary:
    """A minted canary: the decoy to hand over and the signature version that carries its rule."""

    mark_id: str
    name: str
    kind: str
    data: bytes
    signature_version: int


def pack_name(vendor: str) -> str:
    """The vendor's canary pack: ``canaries-<vendor>``; a vendor name that is no valid pack name
    (spaces, ``@``, too long) is made safe and given a hash of the real name, so two vendors never
    share a pack."""
    name = PACK_PREFIX + vendor
    if PACK_NAME.match(name):
        return name
    safe = _UNSAFE.sub("_", vendor)[:96]
    return f"{PACK_PREFIX}{safe}-{hashlib.sha256(vendor.encode('utf-8')).hexdigest()[:12]}"


def canary_pack(rules: list[tuple[str, str, str]]) -> str:
    """YARA text with one rule per canary ``(mark_id, canary_kind, rule_sha256)``.

    Raises:
        ValueError: a value that is not a mark id, canary kind or SHA-256 hex digest (nothing from
            outside those forms reaches the rule text).
    """
    parts = [
        "// The vendor's canaries (server/canaries.py): rebuilt by the collector with every new canary; edits are lost.",
        "// A rule recognises its decoy's secret by its SHA-256, so this pack holds no secret.",
        'import "hash"',
    ]
    for mark_id, kind, sha256 in rules:
        if not _MARK_ID.match(mark_id) or kind not in SECRET_PATTERNS or not _SHA256_HEX.match(sha256):
            raise ValueError(f"not a canary rule: {mark_id!r}, {kind!r}, {sha256!r}")
        parts.append(
            f"""
rule canary_{mark_id.removeprefix("mk_")}
{{
    meta:
        mark = "{mark_id}"
        severity = "critical"
        category = "canary"
        canary_kind = "{kind}"
        description = "Canary {mark_id}: a {kind} decoy planted in this vendor's material was copied"
    strings:
        $s = {SECRET_PATTERNS[kind]} ascii
    condition:
        for any i in (1..#s): (hash.sha256(@s[i], !s[i]) == "{sha256}")
}}"""
        )
    return "\n".join(parts) + "\n"


def create_canary(
    conn: Connection,
    *,
    key: bytes,
    vendor: str,
    seat: str | None,
    kind: str,
    actor: str,
    now: datetime,
    address: str | None = None,
    secret_seed: random.Random | None = None,
) -> Canary:
    """Mint a canary of ``kind`` for ``vendor`` (and ``seat``) and publish the vendor's rebuilt pack.

    Raises:
        InvalidInput: an unknown kind or a bad seat, the vendor's pack name held by a pack of other
            vendors, or the resulting version does not compile (the transaction rolls back).
        NotFound: no such vendor.
    """
    if kind not in decoys.KINDS:
        raise InvalidInput(f"a canary's kind must be one of {', '.join(decoys.KINDS)}")
    made = decoys.decoy(kind, secret_seed=secret_seed)
    sha256 = hashlib.sha256(made.data).hexdigest()
    subject = {"name": made.name, "format": FORMATS[kind], "size": len(made.data), "sha256": sha256}
    mark, _ = marks.mint(conn, key=key, kind="canary", vendor=vendor, seat=seat, subject=subject, created_by=actor, now=now, payload=made.secret.encode("ascii"), canary_kind=kind)
    mark_id = mark["mark_id"]
    # The decoy as written is a marked copy too: found byte for byte, it traces without reading it.
    marks.record_copy(conn, mark_id=mark_id, marked_sha256=sha256, marked_size=len(made.data))
    name = pack_name(vendor)
    _check_owner(conn, name, vendor)
    note = f"canary {mark_id} ({kind}) for {vendor}"
    pack = {name: canary_pack(marks.canary_rules_for(conn, vendor=vendor))}
    version, _rules = signature_store.publish_checked(conn, packs=pack, vendors=[vendor], note=note, actor=actor, address=address, now=now)
    details = {"vendor": vendor, "seat": mark["seat"], "kind": kind, "name": made.name, "sha256": sha256, "signature_version": version}
    audit.append(conn, actor=actor, action="marks.canary", target=mark_id, details=details, address=address, now=now)
    return Canary(mark_id, made.name, kind, made.data, version)


def _check_owner(conn: Connection, name: str, vendor: str) -> None:
    """Refuse to replace a same-named pack that goes to other vendors (an admin's own upload)."""
    current = signature_store.current_version(conn)
    if current is None:
        return
    row = conn.execute(select(signature_packs.c.vendors).where(signature_packs.c.version == current, signature_packs.c.name == name)).first()
    if row is not None and row.vendors != [vendor]:
        raise InvalidInput(f"pack {name!r} of version {current} is not {vendor}'s canary pack; remove or rename it first")
