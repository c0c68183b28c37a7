"""Signed bundles: the collector writes them, the agent's reader refuses anything not exactly signed."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.bundle import MAX_BUNDLE_BYTES, BundleError, read_bundle
from agent.transport import CollectorClient
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
        (gzip.compress(b"\0" * (300 << 20)), "no manifest.json"),  # a bomb is refused after its first block
        (gzip.compress(tar_header("manifest.json", 2 << 30) + b"\0" * 1024), "more than"),
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


# Hand-built archives: tarfile would not write the hostile headers an attacker can.


def tar_header(name: str, size: int, flag: bytes = b"0") -> bytes:
    """One ustar header block, checksummed."""
    block = bytearray(512)
    for offset, value in (
        (0, name.encode()), (100, b"0000644\0"), (108, b"0000000\0"), (116, b"0000000\0"), (124, b"%011o\0" % size),
        (136, b"00000000000\0"), (148, b" " * 8), (156, flag), (257, b"ustar\x0000"),
    ):  # fmt: skip
        block[offset : offset + len(value)] = value
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def pax_records(**records: str) -> bytes:
    """PAX records ``<length> <key>=<value>\\n`` (keys with dots passed as ``GNU_sparse_size``)."""
    out = b""
    for key, value in records.items():
        line = f" {key.replace('_', '.')}={value}\n".encode()
        length = len(line) + len(str(len(line)))
        length = len(line) + len(str(length))
        out += str(length).encode() + line
    return out


def padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def sparse_bundle(**records: str) -> bytes:
    """A PAX header declaring a sparse ``manifest.json`` before an empty regular member, gzipped."""
    pax = pax_records(**records)
    tar = tar_header("PaxHeaders/manifest.json", len(pax), b"x") + padded(pax) + tar_header("manifest.json", 0) + b"\0" * 1024
    return gzip.compress(tar, mtime=0)


_MEASURE = """
import json, resource, sys, tracemalloc
from agent.bundle import BundleError, read_bundle
data = open(sys.argv[1], "rb").read()
vm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))  # the old reader must not take the machine
tracemalloc.start()
try:
    read_bundle(data, public_key_hex="00" * 32, vendor=None)
    outcome = "accepted"
except BundleError as exc:
    outcome = f"BundleError: {exc}"
except MemoryError:
    outcome = "MemoryError"
print(json.dumps({"outcome": outcome, "peak": tracemalloc.get_traced_memory()[1]}))
"""


def test_a_tiny_unsigned_sparse_bundle_is_refused_without_allocating(tmp_path: Path):
    data = sparse_bundle(GNU_sparse_size=str(8 << 30))
    assert len(data) < 200
    (tmp_path / "bundle.tar.gz").write_bytes(data)
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(tmp_path / "bundle.tar.gz")], capture_output=True, text=True, timeout=60, check=False)
    result = json.loads(proc.stdout)
    assert result["outcome"].startswith("BundleError") and "sparse" in result["outcome"], result
    assert result["peak"] < 1 << 20, f"{result['peak']} bytes allocated for a {len(data)}-byte unsigned bundle"


@pytest.mark.parametrize(
    "records",
    [
        {"GNU_sparse_size": str(8 << 30)},
        {"GNU_sparse_map": f"0,1,{8 << 30},0", "GNU_sparse_name": "manifest.json"},
        {"GNU_sparse_major": "1", "GNU_sparse_minor": "0", "GNU_sparse_realsize": str(8 << 30)},
        {"size": str(8 << 30)},
        {"linkpath": "/etc/shadow"},
    ],
)
def test_pax_headers_beyond_a_path_are_refused(key, records):
    with pytest.raises(BundleError, match="sparse|key"):
        read_bundle(sparse_bundle(**records), public_key_hex=public_key_hex(key), vendor="acme-bpo")


@pytest.mark.parametrize(
    "flag, kind",
    [(b"1", "hard link"), (b"2", "symbolic link"), (b"3", "character device"), (b"4", "block device"), (b"5", "directory"),
     (b"6", "fifo"), (b"S", "sparse"), (b"L", "long name"), (b"g", "global"), (b"V", "type")],
)  # fmt: skip
def test_special_members_are_refused(key, flag, kind):
    tar = tar_header("manifest.json", 0, flag) + b"\0" * 1024
    with pytest.raises(BundleError, match=kind):
        read_bundle(gzip.compress(tar), public_key_hex=public_key_hex(key), vendor="acme-bpo")


def test_a_long_pack_name_in_a_pax_path_still_reads(key):
    name = "p" * 120
    bundle = read_bundle(_bundle(key, packs={name: PACK}), public_key_hex=public_key_hex(key), vendor="acme-bpo")
    assert list(bundle.packs) == [name]


def test_a_pack_whose_header_disagrees_with_the_signed_size_is_refused_unread(key):
    def grow(name: str, body: bytes) -> bytes:
        return body + b"\n" if name.startswith("packs/") else body

    with pytest.raises(BundleError, match="not the .* signed"):
        read_bundle(_rewrite(_bundle(key), grow), public_key_hex=public_key_hex(key), vendor="acme-bpo")


def test_the_signature_is_checked_before_any_pack_is_read(key):
    """A forged manifest with a pack member declaring 2 GiB: refused for its signature, the pack unread."""
    good = gzip.decompress(_bundle(key))
    forged = _rewrite(gzip.compress(good), lambda name, body: body.replace(b'"version":3', b'"version":9') if name == "manifest.json" else body)
    head = gzip.decompress(forged)[: 4 * 512]  # manifest.json and manifest.sig, each one block of data
    tar = head + tar_header("packs/quiet.yar", 2 << 30)
    with pytest.raises(BundleError, match="signature"):
        read_bundle(gzip.compress(tar), public_key_hex=public_key_hex(key), vendor="acme-bpo")


class _Oversized(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("ETag", '"big"')
        self.end_headers()
        chunk = b"\0" * (1 << 20)
        try:
            for _ in range(MAX_BUNDLE_BYTES // len(chunk) + 8):
                self.wfile.write(chunk)
        except OSError:
            pass  # the agent hung up, as it should

    def log_message(self, *args: object) -> None:
        pass


def test_the_download_itself_is_bounded():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Oversized)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = CollectorClient(f"http://127.0.0.1:{server.server_address[1]}", timeout_s=10)
    try:
        reply = client.get_signatures(None, max_bytes=MAX_BUNDLE_BYTES)
    finally:
        client.close()
        server.shutdown()
        server.server_close()
        thread.join()
    assert reply.kind == "too_large" and not reply.content and str(MAX_BUNDLE_BYTES) in reply.detail


def test_a_header_checksummed_with_signed_bytes_is_read() -> None:
    """Old tar writers sum header bytes as signed chars; a name with a byte over 127 then sums lower."""
    import io
    import tarfile

    from agent.strict_tar import _parse_header

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT, encoding="utf-8") as archive:
        info = tarfile.TarInfo("café.yar")
        info.size = 0
        archive.addfile(info)
    block = bytearray(buffer.getvalue()[:512])
    signed = sum(b - 256 if b > 127 else b for b in block[:148] + block[156:]) + 8 * 32
    block[148:156] = b"%06o\0 " % signed
    assert _parse_header(bytes(block))[1] == "café.yar"
