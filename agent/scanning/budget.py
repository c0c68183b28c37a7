"""Per-file accounting of time, members and decompressed bytes against the limits."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import IO

from agent.scanning.errors import LimitHit, ScanTimeout
from agent.scanning.limits import ScanLimits
from agent.scanning.results import Status

RawStream = IO[bytes] | io.BufferedIOBase
"""A stream to read decompressed bytes from: a file object, or a gzip/bz2/lzma reader."""


class Budget:
    """What one file may still cost. Every extractor reads through it."""

    def __init__(self, limits: ScanLimits, *, clock: Callable[[], float] = time.monotonic):
        self.limits = limits
        self._clock = clock
        self.deadline = clock() + limits.timeout_s
        self.extracted = 0
        self.members = 0

    def remaining(self) -> float:
        """Seconds left before the deadline; raises once it has passed."""
        left = self.deadline - self._clock()
        if left <= 0:
            raise ScanTimeout(f"scan took longer than {self.limits.timeout_s:g}s")
        return left

    def add_member(self) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise LimitHit(Status.TOO_LARGE, f"more than {self.limits.max_members} archive members", fatal=True)

    def add_bytes(self, count: int) -> None:
        self.extracted += count
        if self.extracted > self.limits.max_extracted_bytes:
            raise LimitHit(
                Status.TOO_LARGE,
                f"more than {self.limits.max_extracted_bytes} bytes extracted",
                fatal=True,
            )

    def reader(self, raw: RawStream, *, name: str, compressed_size: int | None) -> io.BufferedReader:
        """Wrap a decompressing stream so that it cannot outrun the limits.

        ``compressed_size`` (when the format tells it) bounds the ratio: a member
        may produce at most ``max_ratio`` times its compressed size, plus a slack
        so small, very compressible files are not refused.
        """
        cap = None
        if compressed_size is not None:
            cap = max(int(compressed_size * self.limits.max_ratio), self.limits.ratio_slack_bytes)
        return io.BufferedReader(_BoundedRaw(raw, self, cap, name), buffer_size=256 * 1024)


_STEP = 1024 * 1024


class _BoundedRaw(io.RawIOBase):
    """A raw stream that charges every byte it yields to a Budget."""

    def __init__(self, raw: RawStream, budget: Budget, cap: int | None, name: str):
        self._raw = raw
        self._budget = budget
        self._cap = cap
        self._name = name
        self._count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        self._budget.remaining()
        # Small steps: decompressors produce all they are asked for before we can object.
        data = self._raw.read(min(len(buffer), _STEP))
        n = len(data)
        buffer[:n] = data
        self._count += n
        self._budget.add_bytes(n)
        if self._cap is not None and self._count > self._cap:
            raise LimitHit(
                Status.TOO_LARGE,
                f"{self._name}: compression ratio above {self._budget.limits.max_ratio:g}:1",
                fatal=False,
            )
        return n
