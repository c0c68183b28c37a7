"""What marking and tracing a document may cost, and the errors a bad document raises.

Files to mark come from an admin, files to trace from anywhere (a paste site, a competitor's
product): both are read as hostile. A zip is opened only after its directory passes the member and
size bounds, and members are decompressed against a running total, so a bomb costs at most
``MAX_UNZIPPED`` bytes of work whatever its directory claims.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import time
import zipfile
import zlib
from collections.abc import Iterator

from agent.marks.payload import Unmarkable

MiB = 1024 * 1024
MAX_INPUT = 256 * MiB
"""Largest file marked or traced."""
MAX_UNZIPPED = 256 * MiB
"""Decompressed bytes read from one zip, all members together."""
MAX_MEMBERS = 2_000
"""Members of one zip (an office document has a few dozen)."""
MAX_PDF_PAGES = 5_000
"""Pages of a PDF marked or read."""
PDF_SECONDS = 120.0
"""Wall-clock budget for reading or marking one PDF (pypdf on a hostile file can be slow)."""
READ_SECONDS = 15.0
"""Wall-clock budget for reading the text carriers of one other file: past it, what was found so far."""
MARK_SECONDS = 60.0
"""Wall-clock budget for marking one other file: past it, TimeLimit."""
MAX_MARK_TEXT = 16 * MiB
"""Characters of text handed to the marker from one file (marking costs about 40 bytes a character)."""
MAX_MARK_UNZIPPED = 64 * MiB
"""Decompressed bytes of one zip that is being marked (its text parts are held several times over)."""

ZIP_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,  # compression methods Python lacks
    RuntimeError,  # zipfile's "password required"
    ValueError,
)


class CorruptDocument(ValueError):
    """The file claims a format (a zip, a PDF) but cannot be read as one."""


class TooLarge(ValueError):
    """The file, or what it decompresses to, is past the bounds above."""


class TimeLimit(ValueError):
    """Marking the file took longer than its budget (MARK_SECONDS)."""


_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("marks_deadline", default=None)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Within the block, ``expired()`` turns True ``seconds`` from now (an enclosing, earlier deadline stays)."""
    outer = _DEADLINE.get()
    at = time.monotonic() + seconds
    reset = _DEADLINE.set(at if outer is None else min(outer, at))
    try:
        yield
    finally:
        _DEADLINE.reset(reset)


def expired() -> bool:
    """Whether the current deadline (if any) has passed: readers stop and report what they found."""
    at = _DEADLINE.get()
    return at is not None and time.monotonic() > at


def check_time(what: str) -> None:
    """Raise TimeLimit when the current deadline has passed (for markers)."""
    if expired():
        raise TimeLimit(f"{what} took longer than its time limit: the file is too large or too complex to mark")


class Encrypted(Unmarkable):
    """The document needs a password: it can be neither marked nor read."""


class AlreadyMarked(Unmarkable):
    """The file already carries a watermark: a second one would make its trace name two seats."""


WATERMARK_CARRIERS = ("property", "zero_width", "homoglyph", "token")
"""Carriers whose payload is a watermark (canary secrets in a decoy are no reason to refuse)."""


def check_size(data: bytes) -> None:
    if len(data) > MAX_INPUT:
        raise TooLarge(f"file of {len(data)} bytes is larger than {MAX_INPUT} bytes")


class BoundedZip:
    """A zip read under the member and decompression bounds; members come out as bytes."""

    def __init__(self, data: bytes, *, limit: int = MAX_UNZIPPED):
        check_size(data)
        self.limit = limit
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
            self.infos = self.zip.infolist()
        except ZIP_ERRORS as exc:
            raise CorruptDocument(f"corrupt zip: {exc}") from exc
        if len(self.infos) > MAX_MEMBERS:
            raise TooLarge(f"zip of {len(self.infos)} members (more than {MAX_MEMBERS})")
        self.names = {info.filename for info in self.infos}
        if len(self.names) != len(self.infos):
            # Readers disagree on which copy of a name counts (zipfile the last, Office the first):
            # a mark or a trace of one copy would not be what the other program shows.
            raise CorruptDocument("corrupt zip: two members have the same name")
        self.read_bytes = 0

    def encrypted(self) -> bool:
        return any(info.flag_bits & 0x1 for info in self.infos)

    def read(self, info: zipfile.ZipInfo) -> bytes:
        """The member's bytes; TooLarge once the zip's decompressed total passes its limit (MAX_UNZIPPED)."""
        if info.flag_bits & 0x1:
            raise Encrypted(f"{info.filename} is encrypted")
        left = self.limit - self.read_bytes
        try:
            with self.zip.open(info) as member:
                body = member.read(left + 1)
        except ZIP_ERRORS as exc:
            raise CorruptDocument(f"corrupt zip member {info.filename}: {exc}") from exc
        self.read_bytes += len(body)
        if len(body) > left:
            raise TooLarge(f"zip decompresses to more than {self.limit} bytes")
        return body

    def get(self, name: str) -> bytes | None:
        """The member called ``name``, or None when there is none."""
        for info in self.infos:
            if info.filename == name:
                return self.read(info)
        return None
