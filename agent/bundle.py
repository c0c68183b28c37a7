"""Signed rule bundles: the format, and the agent's reader that trusts nothing it did not verify.

A bundle is a gzip-compressed tar archive holding exactly, in this order:

- ``manifest.json``: ``{"format": 1, "version": int, "vendor": str | null, "content_hash": hex,
  "packs": [{"name": str, "sha256": hex, "size": int}, ...], "created_by": str, "created_at": str}``
- ``manifest.sig``: the Ed25519 signature (hex) of the exact bytes of ``manifest.json``, made
  with the collector's signing key; agents receive the public key at enrollment;
- ``packs/<name>.yar``: each pack the manifest lists, whose size and SHA-256 must match.

Members are regular files in ustar headers (a PAX header may carry a long ``path``); anything
else (links, devices, directories, sparse files) is refused, so is any size beyond the caps
below, before a byte of it is read. The manifest comes first so that its signature is checked
before any pack is unpacked.

``content_hash`` is the SHA-256 of the lines ``<name>\\0<sha256>\\n`` sorted by name, so equal
pack sets have equal hashes whatever the archive bytes. ``version`` only grows (a rollback is
published as a new version with older content), which lets an agent refuse a replayed older
bundle; ``vendor`` names the vendor whose agents may load it (null: every vendor).

The collector writes bundles (server/signing.py) and tests the round trip through this reader.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from dataclasses import dataclass
from typing import Any, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.strict_tar import StrictTar, TarError

FORMAT = 1
MAX_BUNDLE_BYTES = 64 << 20
MAX_UNPACKED_BYTES = 256 << 20
MAX_PACKS = 1000
MAX_MANIFEST_BYTES = 1 << 20
MAX_SIGNATURE_BYTES = 1024
PACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class BundleError(Exception):
    """The bundle is not one this agent may load; the message says why."""


@dataclass(frozen=True)
class Bundle:
    version: int
    vendor: str | None
    content_hash: str
    packs: dict[str, bytes]
    """Pack name (the YARA namespace) -> rule source."""
    manifest: dict[str, Any]


def content_hash(pack_hashes: dict[str, str]) -> str:
    listing = "".join(f"{name}\0{pack_hashes[name]}\n" for name in sorted(pack_hashes))
    return hashlib.sha256(listing.encode()).hexdigest()


def read_bundle(data: bytes, *, public_key_hex: str, vendor: str | None, newer_than: int = 0) -> Bundle:
    """Verify and unpack ``data``.

    Nothing is unpacked beyond the small, capped manifest and signature before the signature
    verifies; after that each pack is read only when its header declares the size the signed
    manifest gives it.

    Args:
        public_key_hex: the collector's signing key from enrollment.
        vendor: this agent's vendor; a bundle made for another vendor is refused.
        newer_than: the version already in force; an older bundle is a replay and refused.

    Raises:
        BundleError: anything wrong: size, archive structure, signature, hashes, vendor, version.
    """
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        return _read(data, public_key_hex=public_key_hex, vendor=vendor, newer_than=newer_than)
    except TarError as exc:
        raise BundleError(str(exc)) from None


def _read(data: bytes, *, public_key_hex: str, vendor: str | None, newer_than: int) -> Bundle:
    if data[:2] != b"\x1f\x8b":
        raise BundleError("not a gzip archive")
    archive = StrictTar(gzip.GzipFile(fileobj=io.BytesIO(data)), max_total=MAX_UNPACKED_BYTES, max_members=MAX_PACKS + 2)
    manifest_bytes = _expect(archive, "manifest.json", MAX_MANIFEST_BYTES)
    signature_hex = _expect(archive, "manifest.sig", MAX_SIGNATURE_BYTES)
    _verify_signature(manifest_bytes, signature_hex, public_key_hex)
    manifest = _parse_manifest(manifest_bytes)
    if manifest["vendor"] is not None and manifest["vendor"] != vendor:
        raise BundleError(f"bundle is for vendor {manifest['vendor']!r}, not this agent's")
    if manifest["version"] < newer_than:
        raise BundleError(f"bundle version {manifest['version']} is older than the {newer_than} in force (replay?)")
    listed = {f"packs/{entry['name']}.yar": entry for entry in manifest["packs"]}
    packs: dict[str, bytes] = {}
    while (member := archive.next()) is not None:
        entry = listed.get(member.name)
        if entry is None or entry["name"] in packs:
            raise BundleError(f"bundle holds files its manifest does not list: {member.name[:100]!r}")
        name = entry["name"]
        if member.size != entry["size"]:
            raise BundleError(f"pack {name} is {member.size} bytes, not the {entry['size']} signed (tampered)")
        body = archive.read(member, limit=entry["size"])
        if hashlib.sha256(body).hexdigest() != entry["sha256"]:
            raise BundleError(f"pack {name} does not match its signed hash (tampered)")
        packs[name] = body
    for entry in manifest["packs"]:
        if entry["name"] not in packs:
            raise BundleError(f"pack {entry['name']} is listed but missing")
    hashes = {entry["name"]: entry["sha256"] for entry in manifest["packs"]}
    if content_hash(hashes) != manifest["content_hash"]:
        raise BundleError("content hash does not match the packs")
    ordered = {entry["name"]: packs[entry["name"]] for entry in manifest["packs"]}
    return Bundle(manifest["version"], manifest["vendor"], manifest["content_hash"], ordered, manifest)


def _expect(archive: StrictTar, name: str, limit: int) -> bytes:
    """The next member, which must be ``name``: the signed part of a bundle comes first."""
    member = archive.next()
    if member is None:
        raise BundleError(f"bundle has no {name}")
    if member.name != name:
        raise BundleError(f"unexpected bundle member {member.name[:100]!r} where {name} must come")
    return archive.read(member, limit=limit)


def _is_pack_path(name: str) -> bool:
    return name.startswith("packs/") and name.endswith(".yar") and bool(PACK_NAME.match(name[6:-4]))


def _verify_signature(manifest: bytes, signature_hex: bytes, public_key_hex: str) -> None:
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
        signature = bytes.fromhex(signature_hex.decode("ascii").strip())
    except (ValueError, UnicodeDecodeError):
        raise BundleError("signature or public key is malformed") from None
    try:
        key.verify(signature, manifest)
    except InvalidSignature:
        raise BundleError("signature does not verify with this collector's key") from None


def _parse_manifest(data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"manifest is not JSON: {exc}") from None
    ok = (
        isinstance(manifest, dict)
        and manifest.get("format") == FORMAT
        and isinstance(manifest.get("version"), int)
        and isinstance(manifest.get("content_hash"), str)
        and (manifest.get("vendor") is None or isinstance(manifest.get("vendor"), str))
        and isinstance(manifest.get("packs"), list)
        and len(manifest["packs"]) <= MAX_PACKS
        and all(
            isinstance(p, dict)
            and isinstance(p.get("name"), str)
            and PACK_NAME.match(p["name"])
            and isinstance(p.get("sha256"), str)
            and type(p.get("size")) is int
            and 0 <= p["size"] <= MAX_UNPACKED_BYTES
            for p in manifest["packs"]
        )
        and len({p["name"] for p in manifest["packs"]}) == len(manifest["packs"])
        and sum(p["size"] for p in manifest["packs"]) <= MAX_UNPACKED_BYTES
    )
    if not ok:
        raise BundleError(f"manifest is not a format-{FORMAT} bundle manifest")
    return cast(dict[str, Any], manifest)
