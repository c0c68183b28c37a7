"""Signed bundles: the collector writes them, the agent's reader refuses anything not exactly signed."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.bundle import BundleError, read_bundle
from server.keys import public_key_hex
from server.signing import build_bundle

PACK = 'rule quiet_word { meta: severity = "high" strings: $a = "HUMMINGBIRD-0042" condition: $a }'


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _bundle(key: Ed25519PrivateKey, *, version: int = 3, vendor: str | None = "acme-bpo", packs: dict[str, str] | None = None) -> bytes:
    return build_bundle(version=version, vendor=vendor, packs=packs or {"quiet": PACK}, created_by="alice", created_at="2026-11-24T09:00:00.000Z", key=key).data


def _rewrite(data: bytes, change) -> bytes:
    """Unpack, let ``change(name, body)`` return new bytes (or None to drop), repack."""
    members = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as archive:
        for info in archive:
            members[info.name] = archive.extractfile(info).read()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:") as archive:
        for name, body in members.items():
            body = change(name, body)
            if body is None:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    return gzip.compress(out.getvalue())


def test_round_trip_through_the_agents_reader(key):
    data = _bundle(key, packs={"quiet": PACK, "other": PACK.replace("quiet_word", "other_word")})
    bundle = read_bundle(data, public_key_hex=public_key_hex(key), vendor="acme-bpo", newer_than=2)
    assert bundle.version == 3 and set(bundle.packs) == {"quiet", "other"}
    assert bundle.packs["quiet"] == PACK.encode()
    assert data == _bundle(key, packs={"other": PACK.replace("quiet_word", "other_word"), "quiet": PACK}), "deterministic bytes"


def test_a_tampered_pack_is_refused(key):
    data = _rewrite(_bundle(key), lambda name, body: body.replace(b"HUMMINGBIRD", b"NOTHINGHERE") if name.startswith("packs/") else body)
    with pytest.raises(BundleError, match="tampered"):
        read_bundle(data, public_key_hex=public_key_hex(key), vendor="acme-bpo")


def test_a_tampered_manifest_is_refused(key):
    data = _rewrite(_bundle(key), lambda name, body: body.replace(b'"version":3', b'"version":9') if name == "manifest.json" else body)
    with pytest.raises(BundleError, match="signature"):
        read_bundle(data, public_key_hex=public_key_hex(key), vendor="acme-bpo")


def test_a_bundle_signed_with_another_key_is_refused(key):
    with pytest.raises(BundleError, match="signature"):
        read_bundle(_bundle(Ed25519PrivateKey.generate()), public_key_hex=public_key_hex(key), vendor="acme-bpo")


def test_other_vendors_bundle_and_replays_are_refused(key):
    with pytest.raises(BundleError, match="vendor"):
        read_bundle(_bundle(key), public_key_hex=public_key_hex(key), vendor="globex")
    with pytest.raises(BundleError, match="older"):
        read_bundle(_bundle(key, version=3), public_key_hex=public_key_hex(key), vendor="acme-bpo", newer_than=4)


def test_structural_junk_is_refused(key):
    pub = public_key_hex(key)
    for data, reason in (
        (b"not gzip at all", "gzip"),
        (gzip.compress(b"not a tar"), "tar"),
        (_rewrite(_bundle(key), lambda name, body: None if name == "manifest.sig" else body), "manifest.sig"),
        (_rewrite(_bundle(key), lambda name, body: None if name.startswith("packs/") else body), "missing"),
        (gzip.compress(b"\0" * (300 << 20)), "more than"),
    ):
        with pytest.raises(BundleError, match=reason):
            read_bundle(data, public_key_hex=pub, vendor="acme-bpo")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:") as archive:
        info = tarfile.TarInfo("../../etc/passwd")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BundleError, match="unexpected"):
        read_bundle(gzip.compress(out.getvalue()), public_key_hex=pub, vendor="acme-bpo")
