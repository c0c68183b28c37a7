"""Signed rule bundles: the format, and the agent's reader that trusts nothing it did not verify.

A bundle is a gzip-compressed tar archive holding exactly:

- ``manifest.json``: ``{"format": 1, "version": int, "vendor": str | null, "content_hash": hex,
  "packs": [{"name": str, "sha256": hex, "size": int}, ...], "created_by": str, "created_at": str}``
- ``manifest.sig``: the Ed25519 signature (hex) of the exact bytes of ``manifest.json``, made
  with the collector's signing key; agents receive the public key at enrollment;
- ``packs/<name>.yar``: each pack the manifest lists, whose SHA-256 must match.

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
import tarfile
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = 1
MAX_BUNDLE_BYTES = 64 << 20
MAX_UNPACKED_BYTES = 256 << 20
MAX_PACKS = 1000
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

    Args:
        public_key_hex: the collector's signing key from enrollment.
        vendor: this agent's vendor; a bundle made for another vendor is refused.
        newer_than: the version already in force; an older bundle is a replay and refused.

    Raises:
        BundleError: anything wrong: size, archive structure, signature, hashes, vendor, version.
    """
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle larger than {MAX_BUNDLE_BYTES} bytes")
    members = _members(data)
    try:
        manifest_bytes, signature_hex = members.pop("manifest.json"), members.pop("manifest.sig")
    except KeyError as missing:
        raise BundleError(f"bundle has no {missing.args[0]}") from None
    _verify_signature(manifest_bytes, signature_hex, public_key_hex)
    manifest = _parse_manifest(manifest_bytes)
    packs: dict[str, bytes] = {}
    hashes: dict[str, str] = {}
    for entry in manifest["packs"]:
        name = entry["name"]
        body = members.pop(f"packs/{name}.yar", None)
        if body is None:
            raise BundleError(f"pack {name} is listed but missing")
        if hashlib.sha256(body).hexdigest() != entry["sha256"]:
            raise BundleError(f"pack {name} does not match its signed hash (tampered)")
        packs[name] = body
        hashes[name] = entry["sha256"]
    if members:
        raise BundleError(f"bundle holds files its manifest does not list: {', '.join(sorted(members))[:200]}")
    if content_hash(hashes) != manifest["content_hash"]:
        raise BundleError("content hash does not match the packs")
    if manifest["vendor"] is not None and manifest["vendor"] != vendor:
        raise BundleError(f"bundle is for vendor {manifest['vendor']!r}, not this agent's")
    if manifest["version"] < newer_than:
        raise BundleError(f"bundle version {manifest['version']} is older than the {newer_than} in force (replay?)")
    return Bundle(manifest["version"], manifest["vendor"], manifest["content_hash"], packs, manifest)


def _members(data: bytes) -> dict[str, bytes]:
    try:
        raw = gzip.GzipFile(fileobj=io.BytesIO(data)).read(MAX_UNPACKED_BYTES + 1)
    except (OSError, EOFError) as exc:
        raise BundleError(f"not a gzip archive: {exc}") from None
    if len(raw) > MAX_UNPACKED_BYTES:
        raise BundleError(f"bundle unpacks to more than {MAX_UNPACKED_BYTES} bytes")
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as archive:
            for info in archive:
                if len(members) > MAX_PACKS + 2:
                    raise BundleError("bundle holds too many files")
                if not info.isfile():
                    raise BundleError(f"bundle member {info.name[:100]!r} is not a regular file")
                name = info.name
                if name in members or not (name in ("manifest.json", "manifest.sig") or _is_pack_path(name)):
                    raise BundleError(f"unexpected bundle member {name[:100]!r}")
                handle = archive.extractfile(info)
                members[name] = handle.read() if handle else b""
    except tarfile.TarError as exc:
        raise BundleError(f"not a tar archive: {exc}") from None
    return members


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
            isinstance(p, dict) and isinstance(p.get("name"), str) and PACK_NAME.match(p["name"]) and isinstance(p.get("sha256"), str)
            for p in manifest["packs"]
        )
    )
    if not ok:
        raise BundleError(f"manifest is not a format-{FORMAT} bundle manifest")
    return manifest
