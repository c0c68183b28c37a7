"""The fingerprint index file (``*.fp``): a customer's code as winnowed hashes, each pointing at a file and lines.

Layout (little-endian), memory-mapped when loaded, so an index costs the pages look-ups touch:

    header   80 bytes   magic, format, meta length, entry count, bucket bits, largest bucket,
                        k, w, corpus file count, SHA-256 of everything after the header
    meta     JSON       name, severity, category, min_tokens, tokenizer, corpus file names, build summary
    (zero padding to a multiple of 8)
    directory  (2^B + 1) x u32    where each bucket's entries start
    keys       n x u64            hash (40 bits) << 24 | corpus file number (24 bits), sorted
    lines      n x u32            first line << 12 | line span (capped at 15) << 8 | token position mod 256

A look-up reads the directory slot of the hash's top ``B`` bits and compares the few keys
of that bucket: the same cost at 1 MB or 100 MB of corpus. ``B`` is chosen so buckets hold
8 entries or fewer on average, which keeps the directory under 1 byte an entry: 12 bytes
for the entry and at most 1 for the directory, 13 bytes a fingerprint in all.

An index is checked completely when loaded (checksum, sizes, the directory, sorted keys,
file numbers in range): a corrupt or truncated file is refused with the reason, and the
caller keeps whatever it had.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import mmap
import os
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.events import SEVERITIES
from agent.scanning.rules import INDEX_SUFFIX as INDEX_SUFFIX
from agent.scanning.tokens import MAX_VOCABULARY, Lexicon
from agent.scanning.winnow import HASH_BITS

INDEX_MAGIC = b"DLPFP1\0\0"
FORMAT = 2
TOKENIZER = "dlp-tokens-3"
"""Names the tokenizer and hash that made an index; a scanner with another refuses it."""
HEADER = struct.Struct("<8sIIQIIIII4x32s")
assert HEADER.size == 80
FILE_BITS = 24
MAX_FILES = 1 << FILE_BITS
LINE_BITS = 20
SPAN_BITS = 4
POSITION_BITS = 8
MAX_LINE = (1 << LINE_BITS) - 1
MAX_SPAN = (1 << SPAN_BITS) - 1
"""Corpus lines past a million are reported as the millionth; spans as at most 15 lines."""
MAX_META_BYTES = 256 * 1024 * 1024
DEFAULT_MIN_TOKENS = 50
DEFAULT_SEVERITY = "high"
DEFAULT_CATEGORY = "source_code"
_FILE_MASK = np.uint64(MAX_FILES - 1)
_CHECK_BLOCK = 1 << 20


class FingerprintIndexError(Exception):
    """An index file that cannot be used; the message names it and says why."""


@dataclasses.dataclass(frozen=True)
class Lookup:
    """Where a text's fingerprints occur in the corpus.

    Attributes:
        query: for each hit, the index of the fingerprint in the looked-up array.
        files: the corpus file number of each hit.
        first_lines, spans: the corpus lines of each hit's k-gram.
        positions: the k-gram's token position in its corpus file, modulo 256: enough to
            compare the distance between two nearby hits with their distance in the text.
    """

    query: np.ndarray
    files: np.ndarray
    first_lines: np.ndarray
    spans: np.ndarray
    positions: np.ndarray


class FingerprintIndex:
    """A loaded index: look-ups and what to say about a match."""

    def __init__(self, buffer: Any, *, path: str, label: str, holder: Any = None):
        self.path = path
        self._holder = holder  # the mmap the arrays view; it lives as long as this index
        parsed = _parse(buffer, label)
        self.meta: dict[str, Any] = parsed.meta
        self.version: str = parsed.digest[:16]
        self.count = parsed.count
        self.k = parsed.k
        self.w = parsed.w
        self.size_bytes = len(buffer)
        self.name: str = parsed.meta["name"]
        self.severity: str = parsed.meta["severity"]
        self.category: str = parsed.meta["category"]
        self.min_tokens: int = parsed.meta["min_tokens"]
        self.files: tuple[str, ...] = tuple(parsed.meta["files"])
        self.lexicon = Lexicon(parsed.meta.get("vocabulary", ()))
        self._bits = parsed.bucket_bits
        self._max_bucket = parsed.max_bucket
        self._bisect_steps = max(1, int(parsed.max_bucket).bit_length())
        self._directory = parsed.directory
        self._keys = parsed.keys
        self._lines = parsed.lines

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FingerprintIndex:
        """Map and check the index at ``path``.

        Raises:
            FingerprintIndexError: unreadable, not an index, or corrupt.
        """
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < HEADER.size:
                    raise FingerprintIndexError(f"{path}: truncated fingerprint index ({size} bytes)")
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise FingerprintIndexError(f"{path}: cannot read fingerprint index: {exc.strerror or exc}") from exc
        return cls(mapped, path=path, label=path, holder=mapped)

    def describe(self) -> dict[str, Any]:
        """What heartbeats, the signatures page and ``scan`` say about this index."""
        return {
            "name": self.name,
            "version": self.version,
            "fingerprints": self.count,
            "files": len(self.files),
            "min_tokens": self.min_tokens,
            "k": self.k,
            "w": self.w,
            "vocabulary": len(self.lexicon.vocabulary),
            "size": self.size_bytes,
        }

    def lookup(self, hashes: np.ndarray) -> Lookup:
        """Every entry whose hash is one of ``hashes``; the cost does not depend on the index's size."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        empty = np.zeros(0, dtype=np.int64)
        if self.count == 0 or len(hashes) == 0:
            return Lookup(empty, *(empty.astype(np.uint32) for _ in range(4)))
        buckets = (hashes >> np.uint64(HASH_BITS - self._bits)).astype(np.int64) if self._bits else np.zeros(len(hashes), np.int64)
        starts = self._directory[buckets].astype(np.int64)
        ends = self._directory[buckets + 1].astype(np.int64)
        # Bisect every query's bucket at once (a few array passes, whatever the bucket sizes),
        # to the first entry of its hash; then walk the entries of that hash (a handful).
        target = hashes << np.uint64(FILE_BITS)
        low, high = starts, ends
        for _ in range(self._bisect_steps):
            middle = (low + high) >> 1
            probe = self._keys[np.minimum(middle, self.count - 1)]
            right = (low < high) & (probe < target)
            low = np.where(right, middle + 1, low)
            high = np.where(right, high, np.maximum(middle, low))
        queries: list[np.ndarray] = []
        entries: list[np.ndarray] = []
        alive = np.flatnonzero(low < ends)
        at = low[alive]
        while len(alive):
            same = (self._keys[at] >> np.uint64(FILE_BITS)) == hashes[alive]
            alive, at = alive[same], at[same]
            queries.append(alive)
            entries.append(at)
            at = at + 1
            inside = at < ends[alive]
            alive, at = alive[inside], at[inside]
        if not queries:
            return Lookup(empty, *(empty.astype(np.uint32) for _ in range(4)))
        query = np.concatenate(queries)
        entry = np.concatenate(entries)
        order = np.argsort(query, kind="stable")
        query, entry = query[order], entry[order]
        packed = self._lines[entry]
        files = (self._keys[entry] & _FILE_MASK).astype(np.uint32)
        return Lookup(
            query,
            files,
            packed >> np.uint32(SPAN_BITS + POSITION_BITS),
            (packed >> np.uint32(POSITION_BITS)) & np.uint32(MAX_SPAN),
            packed & np.uint32((1 << POSITION_BITS) - 1),
        )


@dataclasses.dataclass(frozen=True)
class _Parsed:
    meta: dict[str, Any]
    digest: str
    count: int
    bucket_bits: int
    max_bucket: int
    k: int
    w: int
    directory: np.ndarray
    keys: np.ndarray
    lines: np.ndarray


def _parse(buffer: Any, label: str) -> _Parsed:
    """Check ``buffer`` is a whole, consistent index and view its arrays (no copies)."""
    size = len(buffer)
    if size < HEADER.size:
        raise FingerprintIndexError(f"{label}: truncated fingerprint index ({size} bytes)")
    magic, fmt, meta_len, count, bits, max_bucket, k, w, nfiles, checksum = HEADER.unpack_from(buffer, 0)
    if magic != INDEX_MAGIC:
        raise FingerprintIndexError(f"{label}: not a fingerprint index (build one with 'dlp-signatures fingerprint')")
    if fmt != FORMAT:
        raise FingerprintIndexError(f"{label}: fingerprint index format {fmt}, this agent reads {FORMAT}")
    if meta_len > MAX_META_BYTES or bits > 32 or not 1 <= k <= 256 or not 1 <= w <= 256 or nfiles > MAX_FILES:
        raise FingerprintIndexError(f"{label}: corrupt fingerprint index header")
    meta_end = HEADER.size + meta_len
    directory_at = (meta_end + 7) // 8 * 8
    slots = (1 << bits) + 1
    keys_at = directory_at + 4 * slots
    keys_at = (keys_at + 7) // 8 * 8
    lines_at = keys_at + 8 * count
    expected = lines_at + 4 * count
    if size != expected:
        raise FingerprintIndexError(f"{label}: truncated or padded fingerprint index ({size} bytes, expected {expected})")
    digest = hashlib.sha256(memoryview(buffer)[HEADER.size :])
    if digest.digest() != checksum:
        raise FingerprintIndexError(f"{label}: fingerprint index checksum does not match (corrupt or altered)")
    try:
        meta = json.loads(bytes(buffer[HEADER.size : meta_end]))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FingerprintIndexError(f"{label}: corrupt fingerprint index metadata: {exc}") from None
    meta = _checked_meta(meta, nfiles, label)
    directory = np.frombuffer(buffer, dtype="<u4", count=slots, offset=directory_at)
    keys = np.frombuffer(buffer, dtype="<u8", count=count, offset=keys_at)
    lines = np.frombuffer(buffer, dtype="<u4", count=count, offset=lines_at)
    sizes = np.diff(directory.astype(np.int64))
    if directory[0] != 0 or int(directory[-1]) != count or (sizes < 0).any() or (count and int(sizes.max()) > max_bucket):
        raise FingerprintIndexError(f"{label}: corrupt fingerprint index directory")
    # In blocks: temporaries of a block's size, not of the index's (an index may be hundreds of MB).
    for start in range(0, count, _CHECK_BLOCK):
        block = keys[start : start + _CHECK_BLOCK + 1]
        if (block[1:] < block[:-1]).any() or int((block & _FILE_MASK).max()) >= nfiles:
            raise FingerprintIndexError(f"{label}: corrupt fingerprint index entries")
    return _Parsed(meta, digest.hexdigest(), count, bits, max_bucket, k, w, directory, keys, lines)


def _checked_meta(meta: Any, nfiles: int, label: str) -> dict[str, Any]:
    def bad(why: str) -> FingerprintIndexError:
        return FingerprintIndexError(f"{label}: corrupt fingerprint index metadata: {why}")

    if not isinstance(meta, dict):
        raise bad("not an object")
    if meta.get("tokenizer") != TOKENIZER:
        raise FingerprintIndexError(
            f"{label}: built with tokenizer {meta.get('tokenizer')!r}, this agent uses {TOKENIZER!r}: rebuild it"
        )
    name = meta.get("name")
    if not isinstance(name, str) or not name or len(name) > 200:
        raise bad("name")
    if meta.get("severity") not in SEVERITIES:
        raise bad("severity")
    category = meta.get("category")
    if not isinstance(category, str) or not category or len(category) > 100:
        raise bad("category")
    min_tokens = meta.get("min_tokens")
    if not isinstance(min_tokens, int) or isinstance(min_tokens, bool) or not 1 <= min_tokens <= 1_000_000:
        raise bad("min_tokens")
    files = meta.get("files")
    if not isinstance(files, list) or len(files) != nfiles or not all(isinstance(f, str) for f in files):
        raise bad("files")
    vocabulary = meta.get("vocabulary", [])
    if (
        not isinstance(vocabulary, list)
        or len(vocabulary) > MAX_VOCABULARY
        or not all(isinstance(v, str) and 0 < len(v) <= 200 for v in vocabulary)
    ):
        raise bad("vocabulary")
    return meta


def check_index_bytes(data: bytes, *, label: str) -> dict[str, Any]:
    """Check an index held in memory (a publish upload); returns ``describe()`` of it.

    Raises:
        FingerprintIndexError: as ``FingerprintIndex.load``.
    """
    return FingerprintIndex(data, path=label, label=label).describe()


def write_index(
    out: str,
    *,
    hashes: np.ndarray,
    files: np.ndarray,
    first_lines: np.ndarray,
    spans: np.ndarray,
    positions: np.ndarray,
    file_names: Sequence[str],
    k: int,
    w: int,
    meta: dict[str, Any],
    vocabulary: Sequence[str] = (),
) -> int:
    """Write an index of the given entries (any order) atomically; returns its size in bytes.

    ``meta`` must hold name, severity, category and min_tokens; the tokenizer and the
    file names are added here.
    """
    if len(file_names) > MAX_FILES:
        raise ValueError(f"a fingerprint index holds at most {MAX_FILES:,} files")
    keys = (np.asarray(hashes, dtype=np.uint64) << np.uint64(FILE_BITS)) | np.asarray(files, dtype=np.uint64)
    lines = np.minimum(np.asarray(first_lines, dtype=np.uint64), MAX_LINE).astype(np.uint32)
    span = np.minimum(np.asarray(spans, dtype=np.uint64), MAX_SPAN).astype(np.uint32)
    position = (np.asarray(positions, dtype=np.uint64) & np.uint64((1 << POSITION_BITS) - 1)).astype(np.uint32)
    packed = (lines << np.uint32(SPAN_BITS + POSITION_BITS)) | (span << np.uint32(POSITION_BITS)) | position
    order = np.argsort(keys, kind="stable")
    keys, packed = keys[order], packed[order]
    count = len(keys)
    bits = max(0, int(np.ceil(np.log2(count))) - 3) if count > 8 else 0
    buckets = (keys >> np.uint64(FILE_BITS + HASH_BITS - bits)).astype(np.int64) if bits else np.zeros(count, np.int64)
    directory = np.searchsorted(buckets, np.arange((1 << bits) + 1), side="left").astype("<u4")
    max_bucket = int(np.diff(directory.astype(np.int64)).max()) if count else 0
    body_meta = json.dumps(
        {**meta, "tokenizer": TOKENIZER, "files": list(file_names), "vocabulary": list(vocabulary)}, sort_keys=True
    ).encode()
    directory_at = (HEADER.size + len(body_meta) + 7) // 8 * 8
    keys_at = (directory_at + 4 * len(directory) + 7) // 8 * 8
    body = bytearray(keys_at - HEADER.size)
    body[: len(body_meta)] = body_meta
    start = directory_at - HEADER.size
    body[start : start + 4 * len(directory)] = directory.tobytes()
    body += keys.astype("<u8").tobytes()
    body += packed.astype("<u4").tobytes()
    header = HEADER.pack(INDEX_MAGIC, FORMAT, len(body_meta), count, bits, max_bucket, k, w, len(file_names), hashlib.sha256(body).digest())
    temporary = f"{out}.tmp-{os.getpid()}"
    try:
        with open(temporary, "wb") as f:
            f.write(header)
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, out)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return HEADER.size + len(body)
