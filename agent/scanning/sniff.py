"""Content type by magic bytes, never by file name: a renamed zip is still a zip."""

from __future__ import annotations

import enum
import zlib


class Kind(str, enum.Enum):
    """What the first bytes of some content say it is."""

    ZIP = "zip"
    TAR = "tar"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    PDF = "pdf"
    OLE = "ole"
    SEVEN_ZIP = "7z"
    RAR = "rar"
    ZSTD = "zstd"
    LZ4 = "lz4"
    ZLIB = "zlib"
    GIT_PACK = "git pack"
    GIT_BUNDLE = "git bundle"
    OTHER = "other"


SNIFF_BYTES = 1024
"""How many leading bytes ``sniff`` looks at."""

_PREFIXES: tuple[tuple[bytes, Kind], ...] = (
    (b"PK\x03\x04", Kind.ZIP),
    (b"PK\x05\x06", Kind.ZIP),  # an empty zip is still a zip: nothing to extract, but not junk
    (b"\x1f\x8b", Kind.GZIP),
    (b"BZh", Kind.BZIP2),
    (b"\xfd7zXZ\x00", Kind.XZ),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", Kind.OLE),
    (b"7z\xbc\xaf\x27\x1c", Kind.SEVEN_ZIP),
    (b"Rar!\x1a\x07", Kind.RAR),
    (b"\x28\xb5\x2f\xfd", Kind.ZSTD),
    (b"\x04\x22\x4d\x18", Kind.LZ4),  # the frame format; the legacy one is not sniffed
    (b"PACK\x00\x00\x00\x02", Kind.GIT_PACK),
    (b"PACK\x00\x00\x00\x03", Kind.GIT_PACK),
    (b"# v2 git bundle\n", Kind.GIT_BUNDLE),
    (b"# v3 git bundle\n", Kind.GIT_BUNDLE),
)


_FIRST_BYTES = frozenset(prefix[:1] for prefix, _ in _PREFIXES)
"""A head starting with none of these has none of the prefixes: text is spared 14 ``startswith``."""


def sniff(head: bytes) -> Kind:
    """Classify content from its first ``SNIFF_BYTES`` bytes."""
    if head[:1] in _FIRST_BYTES:
        for prefix, kind in _PREFIXES:
            if head.startswith(prefix):
                return kind
    if is_tar(head):
        return Kind.TAR
    if is_zlib(head):
        return Kind.ZLIB
    # PDF readers accept the header anywhere in the first kilobyte, so do we.
    if b"%PDF-" in head[:SNIFF_BYTES]:
        return Kind.PDF
    return Kind.OTHER


def is_zlib(head: bytes) -> bool:
    """A zlib stream (git loose objects, `pigz -z` or `qpdf`-style dumps).

    Two header bytes are a weak sign (``x^`` can start a text), so the head must
    also inflate without error.
    """
    if len(head) < 8 or head[0] != 0x78 or head[1] not in _ZLIB_LEVELS:
        return False
    try:
        zlib.decompressobj().decompress(head, 64)
    except zlib.error:
        return False
    return True


_ZLIB_LEVELS = frozenset(b"\x01\x5e\x9c\xda")


def is_tar(head: bytes) -> bool:
    """POSIX and GNU tar headers carry ``ustar`` at offset 257."""
    return head[257:262] == b"ustar"


CONTAINERS = frozenset(set(Kind) - {Kind.OTHER})
"""Kinds the extractor has something to say about."""
