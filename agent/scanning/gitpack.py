"""Objects of git packfiles and bundles: what ``git push``, ``git bundle`` and ``.git/objects/pack`` carry.

A pack is a 12-byte header and then objects, each a small type-and-size header and a
zlib stream; nothing says where a stream ends but the stream itself, so objects are
inflated in order. Deltas (a later version stored as edits of another object) are
applied when their base is still held: bases are kept up to a bound of bytes, and a
delta whose base is gone (or, in a thin pack, was never there) is reported, not guessed.
A bundle is a text header (refs and prerequisites) ending with a blank line, then a pack.
"""

from __future__ import annotations

import collections
import hashlib
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from agent.scanning.budget import Budget
from agent.scanning.errors import LimitHit
from agent.scanning.results import Status

_TYPES = {1: "commit", 2: "tree", 3: "blob", 4: "tag"}
_OFS_DELTA, _REF_DELTA = 6, 7
_SCANNED = ("commit", "blob", "tag")  # trees hold names and hashes, not content
_BLOCK = 64 * 1024


class PackMember:
    """One object of a pack: its name (``blob:<sha>``) and content, or why it has none."""

    __slots__ = ("name", "data", "problem")

    def __init__(self, name: str, data: bytes | None = None, problem: LimitHit | None = None):
        self.name = name
        self.data = data
        self.problem = problem


def bundle_pack_start(f: BinaryIO) -> tuple[int, int]:
    """Where the pack of a bundle starts, and the object id length (sha1: 20, sha256: 32)."""
    f.seek(0)
    head = f.read(1024 * 1024)
    end = head.find(b"\n\n")
    if end < 0 or head[end + 2 : end + 6] != b"PACK":
        raise ValueError("git bundle without a pack after its header")
    id_length = 32 if b"\n@object-format=sha256\n" in head[: end + 1] else 20
    return end + 2, id_length


def pack_members(f: BinaryIO, start: int, budget: Budget, *, id_length: int = 20) -> Iterator[PackMember]:
    """The commits, blobs and tags of the pack at ``start``, deltas resolved where their base is held."""
    f.seek(start)
    header = f.read(12)
    if len(header) < 12 or header[:4] != b"PACK":
        raise ValueError("not a git pack")
    count = int.from_bytes(header[8:12], "big")
    reader = _Reader(f, start + 12)
    bases = _Bases(budget.limits.chunk_bytes * 2)
    hash_name = "sha256" if id_length == 32 else "sha1"
    unresolved = 0
    for _ in range(count):
        budget.remaining()
        offset = reader.pos
        kind, size = reader.object_header()
        base_key: int | bytes | None = None
        if kind == _OFS_DELTA:
            base_key = offset - reader.ofs_distance()
        elif kind == _REF_DELTA:
            base_key = reader.read(id_length)
        elif kind not in _TYPES:
            raise ValueError(f"git object of unknown type {kind} at {offset}")
        keep = size <= budget.limits.chunk_bytes
        data = reader.inflate(size, budget, keep=keep)
        if data is None:
            yield PackMember(f"object@{offset}", problem=LimitHit(Status.TOO_LARGE, f"git object at {offset} larger than a chunk", fatal=False))
            continue
        if base_key is not None:
            base = bases.get(base_key)
            if base is None:
                unresolved += 1
                continue
            type_name = base[0]
            data = apply_delta(base[1], data) if base[1] is not None else None
        else:
            type_name = _TYPES[kind]
        if data is None:
            bases.put(offset, None, type_name, None)  # a tree's delta: a base for others, not content
            continue
        object_id = hashlib.new(hash_name, b"%s %d\0" % (type_name.encode(), len(data)) + data).digest()
        bases.put(offset, object_id, type_name, data if type_name != "tree" else None)
        if type_name in _SCANNED:
            yield PackMember(f"{type_name}:{object_id.hex()}", data=data)
    if unresolved:
        raise LimitHit(Status.SKIPPED, f"{unresolved} git delta objects whose base is not in the pack or no longer held", fatal=False)


def apply_delta(base: bytes, delta: bytes) -> bytes:
    """Git's delta format: the sizes, then copy-from-base and insert instructions.

    Raises:
        ValueError: the delta is corrupt (a truncated one included).
    """
    try:
        return _apply(base, delta)
    except IndexError as exc:
        raise ValueError("truncated git delta") from exc


def _apply(base: bytes, delta: bytes) -> bytes:
    pos = 0

    def size() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            byte = delta[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    if size() != len(base):
        raise ValueError("git delta for a base of another size")
    expected = size()
    out = bytearray()
    while pos < len(delta):
        op = delta[pos]
        pos += 1
        if op & 0x80:
            start = length = 0
            for i in range(4):
                if op & (1 << i):
                    start |= delta[pos] << (8 * i)
                    pos += 1
            for i in range(3):
                if op & (0x10 << i):
                    length |= delta[pos] << (8 * i)
                    pos += 1
            out += base[start : start + (length or 0x10000)]
        elif op:
            out += delta[pos : pos + op]
            pos += op
        else:
            raise ValueError("git delta with a zero instruction")
    if len(out) != expected:
        raise ValueError("git delta produced the wrong size")
    return bytes(out)


class _Bases:
    """Objects that later deltas may name, by pack offset and by id, oldest dropped first."""

    def __init__(self, max_bytes: int):
        self._max = max_bytes
        self._held = 0
        self._by_offset: collections.OrderedDict[int, tuple[str, bytes | None]] = collections.OrderedDict()
        self._by_id: dict[bytes, int] = {}

    def put(self, offset: int, object_id: bytes | None, type_name: str, data: bytes | None) -> None:
        self._by_offset[offset] = (type_name, data)
        if object_id is not None:
            self._by_id[object_id] = offset
        self._held += len(data or b"")
        while self._held > self._max and self._by_offset:
            _, (_, dropped) = self._by_offset.popitem(last=False)
            self._held -= len(dropped or b"")

    def get(self, key: int | bytes) -> tuple[str, bytes | None] | None:
        offset = self._by_id.get(key) if isinstance(key, bytes) else key
        return self._by_offset.get(offset) if offset is not None else None


class _Reader:
    """Bytes of a pack in order, with the position in the file, for a format read front to back."""

    def __init__(self, f: BinaryIO, pos: int):
        self._f = f
        self._buf = b""
        self._at = 0
        self.pos = pos

    def _more(self) -> None:
        block = self._f.read(_BLOCK)
        if not block:
            raise EOFError("git pack ends inside an object")
        self._buf = self._buf[self._at :] + block
        self._at = 0

    def byte(self) -> int:
        if self._at >= len(self._buf):
            self._more()
        value = self._buf[self._at]
        self._at += 1
        self.pos += 1
        return value

    def read(self, n: int) -> bytes:
        while len(self._buf) - self._at < n:
            self._more()
        out = self._buf[self._at : self._at + n]
        self._at += n
        self.pos += n
        return out

    def object_header(self) -> tuple[int, int]:
        byte = self.byte()
        kind, size, shift = (byte >> 4) & 7, byte & 0x0F, 4
        while byte & 0x80:
            byte = self.byte()
            size |= (byte & 0x7F) << shift
            shift += 7
        return kind, size

    def ofs_distance(self) -> int:
        byte = self.byte()
        value = byte & 0x7F
        while byte & 0x80:
            byte = self.byte()
            value = ((value + 1) << 7) | (byte & 0x7F)
        return value

    def inflate(self, size: int, budget: Budget, *, keep: bool) -> bytes | None:
        """One zlib stream of ``size`` bytes inflated; with ``keep`` False only stepped over."""
        inflater = zlib.decompressobj()
        out = bytearray()
        produced = 0
        while not inflater.eof:
            if self._at >= len(self._buf):
                self._more()
            chunk = self._buf[self._at :]
            piece = inflater.decompress(chunk, _BLOCK)
            consumed = len(chunk) - len(inflater.unconsumed_tail) - len(inflater.unused_data)
            self._at += consumed
            self.pos += consumed
            produced += len(piece)
            budget.add_bytes(len(piece))
            if produced > size:
                raise ValueError("git object larger than its header says")
            if keep:
                out += piece
            budget.remaining()
        if produced != size:
            raise ValueError("git object smaller than its header says")
        return bytes(out) if keep else None
