"""Content type by magic bytes, never by file name: a renamed zip is still a zip."""

from __future__ import annotations

import enum


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
)


def sniff(head: bytes) -> Kind:
    """Classify content from its first ``SNIFF_BYTES`` bytes."""
    for prefix, kind in _PREFIXES:
        if head.startswith(prefix):
            return kind
    if is_tar(head):
        return Kind.TAR
    # PDF readers accept the header anywhere in the first kilobyte, so do we.
    if b"%PDF-" in head[:SNIFF_BYTES]:
        return Kind.PDF
    return Kind.OTHER


def is_tar(head: bytes) -> bool:
    """POSIX and GNU tar headers carry ``ustar`` at offset 257."""
    return head[257:262] == b"ustar"


CONTAINERS = frozenset({Kind.ZIP, Kind.TAR, Kind.GZIP, Kind.BZIP2, Kind.XZ, Kind.PDF, Kind.OLE, Kind.SEVEN_ZIP, Kind.RAR})
"""Kinds the extractor has something to say about."""
