"""A strict reader of the tar subset signed bundles use, with every declared size checked before a byte is read.

``tarfile`` trusts what a header declares: a PAX ``GNU.sparse.size=8G`` in a 190-byte download
makes it allocate gigabytes of holes before the bundle's signature has been looked at. This
reader knows only what the collector writes (ustar headers of regular files, and PAX headers
that carry a long ``path``), refuses everything else by name (links, devices, fifos,
directories, sparse files, GNU long names, global headers, unknown PAX keys), and lets the
caller say how large each member may be before its data is read.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

BLOCK = 512
MAX_PAX_BYTES = 8192
CHUNK = 1 << 20
_REGULAR = (b"0", b"\0")
_PAX = b"x"
# What may appear in a member's PAX header: names and harmless metadata, never sizes, links or sparse maps.
_PAX_KEYS = frozenset({"path", "mtime", "atime", "ctime", "uid", "gid", "uname", "gname"})
_TYPES = {
    b"1": "a hard link", b"2": "a symbolic link", b"3": "a character device", b"4": "a block device",
    b"5": "a directory", b"6": "a fifo", b"7": "a contiguous file", b"g": "a global PAX header",
    b"S": "a GNU sparse file", b"L": "a GNU long name", b"K": "a GNU long link name",
}  # fmt: skip


class Readable(Protocol):
    """A byte stream (a ``GzipFile``, say) whose ``read(n)`` returns at most ``n`` bytes."""

    def read(self, size: int, /) -> bytes: ...


class TarError(Exception):
    """The archive is not the plain tar of regular files expected; the message says why."""


@dataclass(frozen=True)
class Member:
    name: str
    size: int


class StrictTar:
    """Reads members one at a time from an uncompressed tar stream (a ``GzipFile``, say).

    Args:
        stream: the tar bytes.
        max_total: the most bytes (headers, data and padding) this reader will take from ``stream``.
        max_members: the most members it will return.
    """

    def __init__(self, stream: Readable, *, max_total: int, max_members: int) -> None:
        self._stream = stream
        self._max_total = max_total
        self._max_members = max_members
        self._consumed = 0
        self._members = 0

    def next(self) -> Member | None:
        """The next member's header, or None at the end of the archive; its data must be read next."""
        pax: dict[str, str] | None = None
        while True:
            block = self._read_exactly(BLOCK)
            if block == b"\0" * BLOCK:
                if pax is not None:
                    raise TarError("archive ends after a PAX header")
                return None
            flag, name, size = _parse_header(block)
            if flag == _PAX:
                if pax is not None:
                    raise TarError("two PAX headers in a row")
                if size > MAX_PAX_BYTES:
                    raise TarError(f"PAX header declares {size} bytes, more than {MAX_PAX_BYTES}")
                pax = _parse_pax(self._read_data(size))
                continue
            if flag not in _REGULAR:
                kind = _TYPES.get(flag, f"of type {flag!r}")
                raise TarError(f"member {name[:100]!r} is {kind}, not a regular file")
            self._members += 1
            if self._members > self._max_members:
                raise TarError(f"archive holds more than {self._max_members} members")
            return Member((pax or {}).get("path", name), size)

    def read(self, member: Member, *, limit: int) -> bytes:
        """The member's data, refused unread when its declared size is over ``limit``."""
        if member.size > limit:
            raise TarError(f"member {member.name[:100]!r} declares {member.size} bytes, more than the {limit} allowed")
        return self._read_data(member.size)

    def stream(self, member: Member, *, limit: int) -> Iterator[bytes]:
        """The member's data in chunks of at most ``CHUNK`` bytes, for members too large to hold in memory."""
        if member.size > limit:
            raise TarError(f"member {member.name[:100]!r} declares {member.size} bytes, more than the {limit} allowed")
        left = member.size
        while left:
            chunk = self._read_exactly(min(left, CHUNK))
            left -= len(chunk)
            yield chunk
        self._read_exactly(-member.size % BLOCK)

    def _read_data(self, size: int) -> bytes:
        data = self._read_exactly(size)
        self._read_exactly(-size % BLOCK)
        return data

    def _read_exactly(self, size: int) -> bytes:
        if self._consumed + size > self._max_total:
            raise TarError(f"archive unpacks to more than {self._max_total} bytes")
        self._consumed += size
        chunks: list[bytes] = []
        left = size
        try:
            while left:
                chunk = self._stream.read(min(left, CHUNK))
                if not chunk:
                    raise TarError("tar archive is truncated")
                chunks.append(chunk)
                left -= len(chunk)
        except (OSError, EOFError, zlib.error) as exc:
            raise TarError(f"archive is not readable (bad gzip?): {exc}") from None
        return b"".join(chunks)


def _parse_header(block: bytes) -> tuple[bytes, str, int]:
    """(type flag, name, declared size) of a ustar header block."""
    stored = _octal(block[148:156], "checksum")
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b > 127)  # bytes read as signed chars
    if stored not in (unsigned, signed):
        raise TarError("header checksum does not match (not a tar archive?)")
    if block[257:265] not in (b"ustar\x0000", b"ustar  \0"):
        raise TarError("header is not ustar")
    if block[124] & 0x80:
        raise TarError("member declares a size in base-256 (over 8 GiB)")
    name = _text(block[0:100])
    prefix = _text(block[345:500]) if block[257:265] == b"ustar\x0000" else ""
    return block[156:157], f"{prefix}/{name}" if prefix else name, _octal(block[124:136], "size")


def _octal(field: bytes, what: str) -> int:
    digits = field.replace(b"\0", b" ").strip()
    if not digits or any(c not in b"01234567" for c in digits):
        raise TarError(f"header {what} field is not an octal number")
    return int(digits, 8)


def _text(field: bytes) -> str:
    try:
        return field.split(b"\0", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        raise TarError("member name is not UTF-8") from None


def _parse_pax(data: bytes) -> dict[str, str]:
    """The records ``<length> <key>=<value>\\n``; a key outside the harmless few is refused."""
    records: dict[str, str] = {}
    position = 0
    while position < len(data):
        space = data.find(b" ", position)
        length_text = data[position:space] if space > 0 else b""
        if not length_text.isdigit() or int(length_text) <= space - position or position + int(length_text) > len(data):
            raise TarError("PAX header is malformed")
        record = data[space + 1 : position + int(length_text)]
        position += int(length_text)
        key, equals, value = record.partition(b"=")
        if not equals or not record.endswith(b"\n"):
            raise TarError("PAX header is malformed")
        try:
            name, text = key.decode("utf-8"), value[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise TarError("PAX header is not UTF-8") from None
        if name not in _PAX_KEYS:
            what = "a sparse file" if name.startswith("GNU.sparse.") else f"the key {name[:60]!r}"
            raise TarError(f"PAX header declares {what}, which bundles never hold")
        records[name] = text
    return records
