"""Writing signed rule bundles (format and reader: agent/bundle.py), and checking packs compile.

Bundles are built deterministically (fixed archive times, sorted members), so every
collector behind a load balancer serves the same bytes and the same ETag for a version.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.bundle import FORMAT, PACK_NAME, content_hash
from agent.scanning import RuleError, load_rules


@dataclass(frozen=True)
class BuiltBundle:
    data: bytes
    etag: str


def check_compiles(packs: dict[str, str]) -> int:
    """Compile ``packs`` together as agents will; returns the rule count.

    Raises:
        RuleError: the compiler's message, naming the pack (``<pack>.yar``) and line.
    """
    for name in packs:
        if not PACK_NAME.match(name):
            raise RuleError(f"pack name {name!r} must be letters, digits, '.', '_' or '-'")
    with tempfile.TemporaryDirectory(prefix="dlp-publish-") as scratch:
        for name, body in packs.items():
            with open(os.path.join(scratch, f"{name}.yar"), "w", encoding="utf-8") as handle:
                handle.write(body)
        try:
            return load_rules(scratch).rule_count
        except RuleError as exc:
            raise RuleError(str(exc).replace(scratch + os.sep, "")) from None


def build_bundle(
    *, version: int, vendor: str | None, packs: dict[str, str], created_by: str, created_at: str, key: Ed25519PrivateKey
) -> BuiltBundle:
    bodies = {name: packs[name].encode("utf-8") for name in sorted(packs)}
    hashes = {name: hashlib.sha256(body).hexdigest() for name, body in bodies.items()}
    manifest = {
        "format": FORMAT,
        "version": version,
        "vendor": vendor,
        "content_hash": content_hash(hashes),
        "packs": [{"name": name, "sha256": hashes[name], "size": len(bodies[name])} for name in bodies],
        "created_by": created_by,
        "created_at": created_at,
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    signature = key.sign(manifest_bytes).hex().encode()
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w:", format=tarfile.PAX_FORMAT) as archive:
        for name, body in [("manifest.json", manifest_bytes), ("manifest.sig", signature), *((f"packs/{n}.yar", b) for n, b in bodies.items())]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(body), 0, 0o644
            archive.addfile(info, io.BytesIO(body))
    data = gzip.compress(tar_bytes.getvalue(), compresslevel=6, mtime=0)
    return BuiltBundle(data, hashlib.sha256(data).hexdigest()[:32])
