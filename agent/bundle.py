"""Signed rule bundles: the format, and the agent's reader that trusts nothing it did not verify.

A bundle is a gzip-compressed tar archive holding exactly, in this order:

- ``manifest.json``: ``{"format": 1 | 2, "version": int, "vendor": str | null, "content_hash": hex,
  "packs": [{"name": str, "sha256": hex, "size": int}, ...], "created_by": str, "created_at": str}``,
  and in format 2 also ``"indexes": [{"name": str, "sha256": hex, "size": int}, ...]``;
- ``manifest.sig``: the Ed25519 signature (hex) of the exact bytes of ``manifest.json``, made
  with the collector's signing key; agents receive the public key at enrollment;
- ``packs/<name>.yar``: each pack the manifest lists, whose size and SHA-256 must match;
- ``indexes/<name>.fp`` (format 2): each fingerprint index the manifest lists, likewise checked.

Format 2 is written only when a bundle carries fingerprint indexes, so an agent that predates
them refuses such a bundle by its format and keeps its rules. Pack and index names share one
namespace (the scanner's), so a name appears once across both lists.

Members are regular files in ustar headers (a PAX header may carry a long ``path``); anything
else (links, devices, directories, sparse files) is refused, so is any size beyond the caps
below, before a byte of it is read. The manifest comes first so that its signature is checked
before any pack is unpacked. Packs are held in memory (they are text, capped at
``MAX_PACKS_BYTES`` together); indexes can be hundreds of megabytes, so a bundle on disk is read
as a stream and each index is written to a file as it is hashed.

``content_hash`` is the SHA-256 of the lines ``<name>\\0<sha256>\\n`` sorted by name, where an
index's name is written ``fp:<name>`` (``:`` is never in a pack name), so equal contents have
equal hashes whatever the archive bytes, and a bundle of packs alone hashes as it always did.
``version`` only grows (a rollback is published as a new version with older content), which
lets an agent refuse a replayed older bundle; ``vendor`` names the vendor whose agents may load
it (null: every vendor).

The collector writes bundles (server/signing.py) and tests the round trip through this reader.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from typing import IO, Any, cast

from agent import ed25519
from agent.private import create_private_file
from agent.strict_tar import StrictTar, TarError

FORMAT = 1
FORMAT_WITH_INDEXES = 2
MAX_BUNDLE_BYTES = 64 << 20
"""The most a bundle held in memory (``read_bundle`` given bytes) may be."""
MAX_PACKS = 1000
MAX_PACKS_BYTES = 256 << 20
"""All packs of a bundle together (they are held in memory)."""
MAX_INDEXES = 64
MAX_INDEX_BYTES = 512 << 20
"""One fingerprint index; the collector refuses to publish a larger one."""
MAX_INDEXES_BYTES = 1 << 30
"""All indexes of a bundle together: what the agent's disk may be asked for, twice during an update."""
MAX_UNPACKED_BYTES = MAX_PACKS_BYTES + MAX_INDEXES_BYTES + (16 << 20)
"""The tar stream, headers and padding included."""
MAX_BUNDLE_FILE_BYTES = MAX_UNPACKED_BYTES
"""The most a bundle downloaded to disk may be (indexes barely compress)."""
MAX_MANIFEST_BYTES = 1 << 20
MAX_SIGNATURE_BYTES = 1024
PACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
INDEX_SUFFIX = ".fp"
_HASH_CHUNK = 1 << 20


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
    indexes: dict[str, str | None] = field(default_factory=dict)
    """Index name -> the verified file written under ``index_dir`` (None when read without one)."""
    index_dir: str | None = None


def content_hash(pack_hashes: dict[str, str], index_hashes: dict[str, str] | None = None) -> str:
    entries = dict(pack_hashes) | {f"fp:{name}": sha for name, sha in (index_hashes or {}).items()}
    listing = "".join(f"{name}\0{entries[name]}\n" for name in sorted(entries))
    return hashlib.sha256(listing.encode()).hexdigest()


def read_bundle(
    source: bytes | str | os.PathLike[str], *, public_key_hex: str, vendor: str | None, newer_than: int = 0, index_dir: str | None = None
) -> Bundle:
    """Verify and unpack a bundle given as bytes or as the path of a file.

    Nothing is unpacked beyond the small, capped manifest and signature before the signature
    verifies; after that each member is read only when its header declares the size the signed
    manifest gives it.

    Args:
        source: the bundle (bytes, at most ``MAX_BUNDLE_BYTES``) or its file (``MAX_BUNDLE_FILE_BYTES``).
        public_key_hex: the collector's signing key from enrollment.
        vendor: this agent's vendor; a bundle made for another vendor is refused.
        newer_than: the version already in force; an older bundle is a replay and refused.
        index_dir: an existing directory where each index is written as ``<name>.fp`` while it is
            hashed; one that does not verify is deleted. Without one, indexes are verified only.

    Raises:
        BundleError: anything wrong: size, archive structure, signature, hashes, vendor, version.
    """
    if isinstance(source, bytes):
        if len(source) > MAX_BUNDLE_BYTES:
            raise BundleError(f"bundle larger than {MAX_BUNDLE_BYTES} bytes")
        return _read_from(io.BytesIO(source), public_key_hex=public_key_hex, vendor=vendor, newer_than=newer_than, index_dir=index_dir)
    path = os.fspath(source)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise BundleError(f"cannot read bundle {path}: {exc.strerror}") from None
    with handle:
        if os.fstat(handle.fileno()).st_size > MAX_BUNDLE_FILE_BYTES:
            raise BundleError(f"bundle {path} is larger than {MAX_BUNDLE_FILE_BYTES} bytes")
        return _read_from(handle, public_key_hex=public_key_hex, vendor=vendor, newer_than=newer_than, index_dir=index_dir)


def _read_from(handle: IO[bytes], *, public_key_hex: str, vendor: str | None, newer_than: int, index_dir: str | None) -> Bundle:
    if handle.read(2) != b"\x1f\x8b":
        raise BundleError("not a gzip archive")
    handle.seek(0)
    written: list[str] = []
    try:
        return _read(handle, public_key_hex=public_key_hex, vendor=vendor, newer_than=newer_than, index_dir=index_dir, written=written)
    except TarError as exc:
        _discard(written)
        raise BundleError(str(exc)) from None
    except BaseException:
        _discard(written)
        raise


def _read(handle: IO[bytes], *, public_key_hex: str, vendor: str | None, newer_than: int, index_dir: str | None, written: list[str]) -> Bundle:
    archive = StrictTar(gzip.GzipFile(fileobj=handle, mode="rb"), max_total=MAX_UNPACKED_BYTES, max_members=MAX_PACKS + MAX_INDEXES + 2)
    manifest_bytes = _expect(archive, "manifest.json", MAX_MANIFEST_BYTES)
    signature_hex = _expect(archive, "manifest.sig", MAX_SIGNATURE_BYTES)
    _verify_signature(manifest_bytes, signature_hex, public_key_hex)
    manifest = _parse_manifest(manifest_bytes)
    if manifest["vendor"] is not None and manifest["vendor"] != vendor:
        raise BundleError(f"bundle is for vendor {manifest['vendor']!r}, not this agent's")
    if manifest["version"] < newer_than:
        raise BundleError(f"bundle version {manifest['version']} is older than the {newer_than} in force (replay?)")
    listed: dict[str, tuple[str, dict[str, Any]]] = {f"packs/{entry['name']}.yar": ("pack", entry) for entry in manifest["packs"]}
    listed |= {f"indexes/{entry['name']}{INDEX_SUFFIX}": ("index", entry) for entry in manifest["indexes"]}
    packs: dict[str, bytes] = {}
    indexes: dict[str, str | None] = {}
    while (member := archive.next()) is not None:
        kind, entry = listed.pop(member.name, ("", {}))
        if not kind:
            raise BundleError(f"bundle holds files its manifest does not list (or twice): {member.name[:100]!r}")
        name = entry["name"]
        if member.size != entry["size"]:
            raise BundleError(f"{kind} {name} is {member.size} bytes, not the {entry['size']} signed (tampered)")
        if kind == "pack":
            body = archive.read(member, limit=entry["size"])
            if hashlib.sha256(body).hexdigest() != entry["sha256"]:
                raise BundleError(f"pack {name} does not match its signed hash (tampered)")
            packs[name] = body
        else:
            target = os.path.join(index_dir, f"{name}{INDEX_SUFFIX}") if index_dir is not None else None
            if target is not None:
                written.append(target)
            digest = _copy(archive.stream(member, limit=entry["size"]), target)
            if digest != entry["sha256"]:
                raise BundleError(f"index {name} does not match its signed hash (tampered)")
            indexes[name] = target
    if listed:
        kind, entry = next(iter(listed.values()))
        raise BundleError(f"{kind} {entry['name']} is listed but missing")
    pack_hashes = {entry["name"]: entry["sha256"] for entry in manifest["packs"]}
    index_hashes = {entry["name"]: entry["sha256"] for entry in manifest["indexes"]}
    if content_hash(pack_hashes, index_hashes) != manifest["content_hash"]:
        raise BundleError("content hash does not match the packs and indexes")
    ordered = {entry["name"]: packs[entry["name"]] for entry in manifest["packs"]}
    ordered_indexes = {entry["name"]: indexes[entry["name"]] for entry in manifest["indexes"]}
    return Bundle(manifest["version"], manifest["vendor"], manifest["content_hash"], ordered, manifest, ordered_indexes, index_dir)


def _copy(chunks: Any, target: str | None) -> str:
    """Hash ``chunks``, writing them to ``target`` (a new 0600 file) when given; the hex digest."""
    digest = hashlib.sha256()
    if target is None:
        for chunk in chunks:
            digest.update(chunk)
        return digest.hexdigest()
    create_private_file(target)
    with open(target, "wb") as out:
        for chunk in chunks:
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _discard(paths: list[str]) -> None:
    """Indexes written before the bundle was refused: never left where a compiler could find them."""
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _expect(archive: StrictTar, name: str, limit: int) -> bytes:
    """The next member, which must be ``name``: the signed part of a bundle comes first."""
    member = archive.next()
    if member is None:
        raise BundleError(f"bundle has no {name}")
    if member.name != name:
        raise BundleError(f"unexpected bundle member {member.name[:100]!r} where {name} must come")
    return archive.read(member, limit=limit)


def _verify_signature(manifest: bytes, signature_hex: bytes, public_key_hex: str) -> None:
    try:
        key = bytes.fromhex(public_key_hex)
        signature = bytes.fromhex(signature_hex.decode("ascii").strip())
    except (ValueError, UnicodeDecodeError):
        raise BundleError("signature or public key is malformed") from None
    if len(key) != ed25519.KEY_BYTES:
        raise BundleError("signature or public key is malformed")
    if not ed25519.verify(key, signature, manifest):
        raise BundleError("signature does not verify with this collector's key")


def _entries_ok(entries: Any, *, most: int, each: int, total: int) -> bool:
    return (
        isinstance(entries, list)
        and len(entries) <= most
        and all(
            isinstance(p, dict)
            and isinstance(p.get("name"), str)
            and PACK_NAME.match(p["name"])
            and isinstance(p.get("sha256"), str)
            and type(p.get("size")) is int
            and 0 <= p["size"] <= each
            for p in entries
        )
        and sum(p["size"] for p in entries) <= total
    )


def _parse_manifest(data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"manifest is not JSON: {exc}") from None
    if isinstance(manifest, dict) and manifest.get("format") == FORMAT:
        manifest.setdefault("indexes", [])
    ok = (
        isinstance(manifest, dict)
        and manifest.get("format") in (FORMAT, FORMAT_WITH_INDEXES)
        and isinstance(manifest.get("version"), int)
        and isinstance(manifest.get("content_hash"), str)
        and (manifest.get("vendor") is None or isinstance(manifest.get("vendor"), str))
        and _entries_ok(manifest.get("packs"), most=MAX_PACKS, each=MAX_PACKS_BYTES, total=MAX_PACKS_BYTES)
        and (manifest["format"] == FORMAT_WITH_INDEXES or manifest["indexes"] == [])
        and _entries_ok(manifest.get("indexes"), most=MAX_INDEXES, each=MAX_INDEX_BYTES, total=MAX_INDEXES_BYTES)
    )
    if ok:
        names = [p["name"] for p in manifest["packs"]] + [p["name"] for p in manifest["indexes"]]
        ok = len(set(names)) == len(names)
    if not ok:
        raise BundleError(f"manifest is not a format-{FORMAT} or format-{FORMAT_WITH_INDEXES} bundle manifest")
    return cast(dict[str, Any], manifest)
