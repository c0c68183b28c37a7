"""Writing signed rule bundles (format and reader: agent/bundle.py), and checking packs and indexes.

Bundles are built deterministically (fixed archive times, sorted members), so every
collector behind a load balancer serves the same bytes and the same ETag for a version.
A bundle is written as a stream: fingerprint indexes can be hundreds of megabytes, so they
are copied into the archive chunk by chunk and the archive goes to a file, never to memory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import mmap
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.bundle import FORMAT, FORMAT_WITH_INDEXES, INDEX_SUFFIX, PACK_NAME, content_hash
from agent.scanning import RuleError, load_rules

_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class BuiltBundle:
    """A signed bundle: in ``data`` (packs only, small) or in the file ``path`` (with indexes)."""

    data: bytes
    etag: str
    path: str | None = None
    size: int = 0


@dataclass(frozen=True)
class IndexSource:
    """A fingerprint index to put in a bundle: ``chunks()`` yields its ``size`` bytes."""

    name: str
    sha256: str
    size: int
    chunks: Callable[[], Iterable[bytes]]


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


def check_index_file(path: str, *, name: str) -> dict[str, Any]:
    """Validate the fingerprint index in ``path`` as agents will load it; its description.

    The file is mapped, not read: an index can be hundreds of megabytes.

    Raises:
        RuleError: the name is not a pack-style name, or the index is empty, truncated or corrupt
            (the message names ``<name>.fp``).
    """
    from agent.scanning.fpindex import FingerprintIndexError, check_index_bytes

    label = f"{name}{INDEX_SUFFIX}"
    if not PACK_NAME.match(name):
        raise RuleError(f"index name {name!r} must be letters, digits, '.', '_' or '-'")
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise RuleError(f"{label}: empty file, not a fingerprint index")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            try:
                return dict(check_index_bytes(view, label=label))  # type: ignore[arg-type]  # any buffer
            except FingerprintIndexError as exc:
                raise RuleError(str(exc)) from None


def build_bundle(
    *, version: int, vendor: str | None, packs: dict[str, str], created_by: str, created_at: str, key: Ed25519PrivateKey
) -> BuiltBundle:
    """A bundle of packs alone, in memory."""
    out = io.BytesIO()
    etag = write_bundle(out, version=version, vendor=vendor, packs=packs, created_by=created_by, created_at=created_at, key=key)
    return BuiltBundle(out.getvalue(), etag, size=out.tell())


def write_bundle(
    out: IO[bytes],
    *,
    version: int,
    vendor: str | None,
    packs: dict[str, str],
    indexes: Sequence[IndexSource] = (),
    created_by: str,
    created_at: str,
    key: Ed25519PrivateKey,
) -> str:
    """Write a signed bundle to ``out``; its ETag (derived from the bytes written)."""
    bodies = {name: packs[name].encode("utf-8") for name in sorted(packs)}
    hashes = {name: hashlib.sha256(body).hexdigest() for name, body in bodies.items()}
    ordered = sorted(indexes, key=lambda index: index.name)
    manifest: dict[str, Any] = {
        "format": FORMAT_WITH_INDEXES if ordered else FORMAT,
        "version": version,
        "vendor": vendor,
        "content_hash": content_hash(hashes, {index.name: index.sha256 for index in ordered}),
        "packs": [{"name": name, "sha256": hashes[name], "size": len(bodies[name])} for name in bodies],
        "created_by": created_by,
        "created_at": created_at,
    }
    if ordered:
        manifest["indexes"] = [{"name": index.name, "sha256": index.sha256, "size": index.size} for index in ordered]
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    signature = key.sign(manifest_bytes).hex().encode()
    hashing = _HashingWriter(out)
    # Indexes are mostly hashes and barely compress: level 1 keeps a 500 MB build to seconds.
    with gzip.GzipFile(filename="", mode="wb", fileobj=hashing, compresslevel=1 if ordered else 6, mtime=0) as compressed:
        with tarfile.TarFile(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT, copybufsize=_COPY_CHUNK) as archive:
            members: list[tuple[str, int, Any]] = [
                ("manifest.json", len(manifest_bytes), io.BytesIO(manifest_bytes)),
                ("manifest.sig", len(signature), io.BytesIO(signature)),
                *((f"packs/{n}.yar", len(b), io.BytesIO(b)) for n, b in bodies.items()),
                *((f"indexes/{i.name}{INDEX_SUFFIX}", i.size, _ChunkReader(i)) for i in ordered),
            ]
            for name, size, body in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = size, 0, 0o644
                archive.addfile(info, body)
    return hashing.digest.hexdigest()[:32]


class _HashingWriter(io.RawIOBase):
    """Passes writes to ``out`` and hashes them (the ETag is the hash of the bundle's bytes)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.digest.update(view)
        self._out.write(view)
        return len(view)


class _ChunkReader(io.RawIOBase):
    """A file-like view of an index's chunks that checks it yields exactly the size and hash given."""

    def __init__(self, index: IndexSource) -> None:
        self._index = index
        self._chunks: Iterator[bytes] = iter(index.chunks())
        self._chunk = b""
        self._offset = 0
        self._seen = 0
        self._digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        wanted = self._index.size - self._seen if size < 0 else size
        while wanted > 0:
            if self._offset >= len(self._chunk):
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._chunk, self._offset = chunk, 0
                continue
            part = self._chunk[self._offset : self._offset + wanted]
            self._offset += len(part)
            wanted -= len(part)
            parts.append(part)
        taken = b"".join(parts)
        self._seen += len(taken)
        self._digest.update(taken)
        if self._seen > self._index.size or (not taken and self._seen != self._index.size):
            raise ValueError(f"index {self._index.name}: stored copy is not the {self._index.size} bytes published")
        if self._seen == self._index.size and self._digest.hexdigest() != self._index.sha256:
            raise ValueError(f"index {self._index.name}: stored copy does not match its published hash")
        return taken
