"""Limits that bound the time and memory any one input can cost the scanner."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclasses.dataclass(frozen=True)
class ScanLimits:
    """Bounds applied to every scanned file.

    The defaults keep a scan job under roughly ``chunk_bytes * 3`` of memory
    whatever the input, and make a zip bomb cost at most ``max_extracted_bytes``
    of decompression work.
    """

    max_file_bytes: int = 8 * GiB
    """Files larger than this are not read at all (status ``too_large``)."""
    chunk_bytes: int = 16 * MiB
    """Content larger than this is scanned in overlapping chunks."""
    overlap_bytes: int = 64 * KiB
    """Overlap between chunks; a string longer than this may be missed at a boundary."""
    timeout_s: float = 60.0
    """Wall-clock budget for one file, archive members and text extraction included."""
    max_depth: int = 4
    """How deep archives may nest (a zip in a zip is depth 2)."""
    max_members: int = 10_000
    """Members extracted from one file, all levels together."""
    max_extracted_bytes: int = 1 * GiB
    """Decompressed bytes from one file, all levels together."""
    max_ratio: float = 200.0
    """Largest decompressed/compressed ratio a member may reach..."""
    ratio_slack_bytes: int = 1 * MiB
    """...once it has produced more than this many bytes."""
    max_offsets: int = 32
    """Offsets reported per rule and member."""
    max_pdf_pages: int = 5_000
    """PDF pages whose text is extracted."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if getattr(self, field.name) <= 0:
                raise ValueError(f"scan limit {field.name} must be positive")
        if self.overlap_bytes >= self.chunk_bytes:
            raise ValueError("scan limit overlap_bytes must be smaller than chunk_bytes")

    @functools.cached_property
    def fingerprint(self) -> str:
        """A short digest of these limits, part of the result cache key."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]
