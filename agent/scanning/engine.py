"""The scanner: the only code that runs YARA.

One ``Scanner`` is shared by every scanning thread (yara-python releases the GIL
while matching, and libyara gives each call its own scan context). A scan never
raises for bad content: every file gets a ``ScanResult`` with a named status.
"""

from __future__ import annotations

import hashlib
import io
import math
import mmap
import os
import stat
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

import yara

from agent.marks.payload import CANARY, TOKEN_PREFIX
from agent.scanning.budget import Budget
from agent.scanning.cache import ResultCache
from agent.scanning.decode import decoded_parts
from agent.scanning.errors import LimitHit, ScanTimeout
from agent.scanning.externals import FileFacts
from agent.scanning.job import Job
from agent.scanning.limits import ScanLimits
from agent.scanning.protected import ProtectedIndex
from agent.scanning.results import ScanResult, Status
from agent.scanning.rules import Ruleset
from agent.scanning.sniff import CONTAINERS, SNIFF_BYTES, Kind, sniff

if TYPE_CHECKING:
    from agent.scanning.extract import Member

# The extractors (archives, documents: tarfile, zstandard, the git pack reader, html) and the mark
# reader (homoglyph and zero-width tables) are imported where a file first needs them: most files
# are plain text, and ``dlp-agent scan`` paid 20 ms of start-up for modules a tree of source files
# never uses.

BINARY_PROBE_BYTES = 8192
"""A NUL byte in this much of the content marks it binary: no code to fingerprint."""
MARK_SLICE = 4 << 20
MARK_OVERLAP = 64 << 10
"""Watermarks are read in slices this large, overlapping this much (a frame spans a few KiB)."""
_TOKEN_PREFIX = TOKEN_PREFIX.encode()
_TOKEN_END = _TOKEN_PREFIX[-1:]


class Scanner:
    """Scans files and byte strings against a ruleset within limits.

    Args:
        ruleset: compiled rules (see ``load_rules``).
        limits: time, size and extraction bounds.
        cache: results by content hash; pass ``None`` to scan everything afresh.
        protected: hashes of the customer's files; a byte-identical copy matches.
        clock: monotonic clock, swappable in tests.
    """

    def __init__(
        self,
        ruleset: Ruleset,
        *,
        limits: ScanLimits | None = None,
        cache: ResultCache | None = None,
        protected: ProtectedIndex | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.ruleset = ruleset
        self.limits = limits or ScanLimits()
        self.cache = cache
        self.protected = protected
        self._clock = clock
        self._local = threading.local()

    # Entry points --------------------------------------------------------

    def scan_path(self, path: str) -> ScanResult:
        """Scan one file. Never blocks on fifos or devices, never raises for content."""
        opened = self._open(path)
        if isinstance(opened, ScanResult):
            return opened
        raw, owner = opened
        with raw:
            try:
                # The external variables rules may read (externals.py): name, path, type and owner.
                facts = FileFacts(path, owner) if self.ruleset.uses_externals else None
                buffer = self._buffer()
                count = _fill(raw, buffer)
                if count < len(buffer):
                    # One copy out of the reused buffer: the decode and mark passes read bytes.
                    head = bytes(buffer[:count])
                    return self._scan_whole(path, head, hashlib.sha256(head).hexdigest(), exclude_path=path, facts=facts)
                # Larger than a chunk: the extractors may read it in small pieces, so buffered.
                with io.BufferedReader(raw) as f:
                    return self._scan_chunked(path, f, exclude_path=path, facts=facts)
            except OSError as exc:
                return ScanResult.problem(path, Status.UNREADABLE, f"read error: {exc.strerror or exc}")

    def scan_bytes(self, data: bytes, *, name: str = "<bytes>") -> ScanResult:
        """Scan content held in memory (clipboard text, say); ``name`` labels the result."""
        facts = FileFacts(None, None) if self.ruleset.uses_externals else None
        if len(data) <= self.limits.chunk_bytes:
            return self._scan_whole(name, data, hashlib.sha256(data).hexdigest(), exclude_path=None, facts=facts)
        return self._scan_chunked(name, io.BytesIO(data), exclude_path=None, facts=facts)

    def _buffer(self) -> memoryview:
        """This thread's read buffer, one chunk plus a byte (to tell "fits" from "larger").

        Reusing it spares an allocation, and the kernel's zeroing of fresh pages,
        for every file: on small files that costs as much as hashing them. An anonymous
        mapping rather than a bytearray: the kernel hands its pages over zeroed as reads first
        touch them, so a tree of small files touches a few of them, where the bytearray zeroed
        all 16 MiB up front (44 ms of CPU on this VM, in each worker of ``--jobs N``).
        """
        buffer = getattr(self._local, "buffer", None)
        if buffer is None:
            buffer = self._local.buffer = memoryview(_private_pages(self.limits.chunk_bytes + 1))
        return buffer

    # One file ------------------------------------------------------------

    def _open(self, path: str) -> tuple[io.FileIO, int] | ScanResult:
        """An open regular file and its owner, or the result that says why there is none.

        Unbuffered: most files are read whole, in one call, into the reused buffer."""
        try:
            info = os.stat(path)
        except FileNotFoundError:
            reason = "broken symbolic link" if os.path.islink(path) else "no such file"
            return ScanResult.problem(path, Status.UNREADABLE, reason)
        except OSError as exc:
            return ScanResult.problem(path, Status.UNREADABLE, exc.strerror or str(exc))
        if not stat.S_ISREG(info.st_mode):
            return ScanResult.problem(path, Status.SKIPPED, f"not a regular file ({_file_type(info.st_mode)})")
        if info.st_size > self.limits.max_file_bytes:
            return ScanResult.problem(path, Status.TOO_LARGE, f"larger than {self.limits.max_file_bytes} bytes", size=info.st_size)
        try:
            # O_NONBLOCK: if the path was swapped for a fifo since stat, open must not hang.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            return ScanResult.problem(path, Status.UNREADABLE, exc.strerror or str(exc), size=info.st_size)
        try:
            opened = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            return ScanResult.problem(path, Status.UNREADABLE, exc.strerror or str(exc), size=info.st_size)
        if not stat.S_ISREG(opened.st_mode):
            os.close(fd)
            return ScanResult.problem(path, Status.SKIPPED, "not a regular file")
        return io.FileIO(fd, "rb"), opened.st_uid

    def _scan_whole(self, path: str, data: bytes | memoryview, sha: str, *, exclude_path: str | None, facts: FileFacts | None) -> ScanResult:
        """Content that fits in one chunk, already hashed."""
        return self._verdict(path, sha, len(data), exclude_path, lambda job: self._scan_small(job, data, None, 0), facts)

    def _scan_chunked(self, path: str, f: BinaryIO, *, exclude_path: str | None, facts: FileFacts | None) -> ScanResult:
        """Content larger than a chunk: hashed in a first pass (cheap next to YARA) so the
        cache can spare the scan, then scanned in overlapping chunks."""
        digest = hashlib.sha256()
        size = 0
        f.seek(0)
        block = self._buffer()  # free here: small content never takes this path
        while count := _fill(f, block):
            digest.update(block[:count])
            size += count
        return self._verdict(path, digest.hexdigest(), size, exclude_path, lambda job: self._scan_large(job, f, None, 0), facts)

    def _verdict(
        self, path: str, sha: str, size: int, exclude_path: str | None, scan: Callable[[Job], None], facts: FileFacts | None = None
    ) -> ScanResult:
        """Run ``scan`` unless the cache knows these bytes; add the protected-copy check."""
        ruleset = self.ruleset
        key = self._cache_key(sha, ruleset)
        if facts is not None:
            key += (facts.path, facts.owner)  # rules may read them: the same bytes elsewhere may differ
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None:
            job = cached.copy()
        else:
            job = Job(
                Budget(self.limits, clock=self._clock),
                max_offsets=self.limits.max_offsets,
                rules=ruleset.rules,
                fingerprints=ruleset.fingerprints,
                facts=facts,
            )
            try:
                scan(job)
            except LimitHit as hit:
                job.problem(hit)
            if self.cache is not None and job.cacheable:
                stored = job.copy()
                stored.rules = None  # a cached result must not keep an old ruleset alive
                stored.fingerprints = ()
                stored.facts = None
                self.cache.put(key, stored)
        # Outside the cache: whether bytes are a copy depends on where they sit.
        self._check_protected(job, sha, None, exclude_path=exclude_path)
        return job.result(path, sha256=sha, size=size, cached=cached is not None)

    def _cache_key(self, sha: str, ruleset: Ruleset) -> tuple[str, ...]:
        member_index = self.protected.version if self.protected is not None else ""
        return (sha, ruleset.version, self.limits.fingerprint, member_index)

    # Content -------------------------------------------------------------

    def _scan_small(self, job: Job, data: bytes | memoryview, member: str | None, depth: int) -> None:
        """Content that fits in one chunk: one YARA call, then its members."""
        self._match(job, data, member, 0)
        if member is not None:
            self._check_protected(job, hashlib.sha256(data).hexdigest(), member)
        kind = sniff(bytes(data[:SNIFF_BYTES]))
        if kind not in CONTAINERS:
            self._fingerprint(job, data, member, 0)
            self._marks(job, data, member)
        if kind in CONTAINERS:
            self._extract(job, kind, io.BytesIO(data), len(data), member, depth)
        self._decode(job, data, member, 0, depth)

    def _scan_large(self, job: Job, f: BinaryIO, member: str | None, depth: int) -> None:
        """Content larger than a chunk: overlapping windows in one reused buffer keep memory flat."""
        limits = self.limits
        digest = hashlib.sha256() if member is not None and self.protected else None
        storage = bytearray(limits.overlap_bytes + limits.chunk_bytes)
        window = memoryview(storage)
        kept = 0  # bytes carried over from the previous window's tail
        base = 0  # offset in the content of window[0]
        line = 0  # line ends before window[0], for fingerprint matches' line numbers
        f.seek(0)
        container = sniff(f.read(SNIFF_BYTES)) in CONTAINERS
        code = bool(job.fingerprints) and not container
        f.seek(0)
        while True:
            count = _fill(f, window[kept : kept + limits.chunk_bytes])
            if count == 0:
                break
            if digest is not None:
                digest.update(window[kept : kept + count])
            end = kept + count
            self._match(job, window[:end], member, base)
            self._decode(job, window[:end], member, base, depth)
            if not container:
                self._marks(job, window[:end], member)
            if code:
                self._fingerprint(job, window[:end], member, line)
            kept = min(limits.overlap_bytes, end)
            if code:
                line += storage.count(b"\n", 0, end - kept)
            window[:kept] = bytes(window[end - kept : end])
            base += end - kept
        if digest is not None:
            self._check_protected(job, digest.hexdigest(), member)
        size = base + kept
        f.seek(0)
        kind = sniff(f.read(SNIFF_BYTES))
        if kind in CONTAINERS:
            f.seek(0)
            self._extract(job, kind, f, size, member, depth)

    def _decode(self, job: Job, data: bytes | memoryview, member: str | None, base: int, depth: int) -> None:
        """Encoded copies in ``data`` (see decode.py), scanned like archive members one level deeper."""
        for part in decoded_parts(data):
            name = f"{part.kind}@{base + part.offset}"
            name = f"{member}!{name}" if member else name
            if depth >= self.limits.max_depth:
                job.problem(self._too_deep(member))
                return
            job.budget.add_member()
            job.budget.add_bytes(len(part.data))
            try:
                self._scan_small(job, part.data, name, depth + 1)
            except LimitHit as hit:
                if hit.fatal:
                    raise
                job.problem(hit)

    def _too_deep(self, member: str | None) -> LimitHit:
        """Nesting past the limit hides what is inside: a signal in itself (see policy.py)."""
        reason = f"{member or 'file'}: archives nested deeper than {self.limits.max_depth}"
        return LimitHit(Status.SKIPPED, reason, fatal=False, uninspected=True)

    def _extract(self, job: Job, kind: Kind, f: BinaryIO, size: int, prefix: str | None, depth: int) -> None:
        from agent.scanning.extract import READ_ERRORS, members

        if depth >= self.limits.max_depth:
            job.problem(self._too_deep(prefix))
            return
        try:
            for item in members(kind, f, size, job.budget, prefix=prefix):
                job.budget.add_member()
                name = f"{prefix}!{item.name}" if prefix else item.name
                if item.problem is not None:
                    job.problem(item.problem)
                    continue
                try:
                    self._scan_member(job, item, name, depth + 1)
                except LimitHit as hit:
                    if hit.fatal:
                        raise
                    job.problem(hit)
                except READ_ERRORS as exc:
                    job.problem(LimitHit(Status.UNREADABLE, f"{name}: {exc}", fatal=False))
        except LimitHit as hit:
            if hit.fatal:
                raise
            job.problem(hit)
        except READ_ERRORS as exc:
            label = f"{prefix}: " if prefix else ""
            job.problem(LimitHit(Status.UNREADABLE, f"{label}cannot extract {kind}: {exc}", fatal=False))

    def _scan_member(self, job: Job, item: Member, name: str, depth: int) -> None:
        chunk = self.limits.chunk_bytes
        if item.data is not None:
            data = item.data
        else:
            assert item.stream is not None
            data = item.stream.read(chunk + 1)
            if len(data) > chunk:
                import shutil
                import tempfile

                # Too big for memory: spill to an unlinked temporary file, scan it in chunks.
                with tempfile.TemporaryFile() as spill:
                    spill.write(data)
                    del data
                    shutil.copyfileobj(item.stream, spill, 1024 * 1024)
                    self._scan_large(job, spill, name, depth)
                return
        if item.is_xml or item.is_text:
            from agent.scanning.doctext import xml_to_text

            job.externals(name, data)  # the part's type is its own bytes', not its text's
            text = xml_to_text(data) if item.is_xml else data
            self._match(job, text, name, 0)
            self._fingerprint(job, text, name, 0)
            self._marks(job, text, name)
            self._decode(job, text, name, 0, depth)
        else:
            self._scan_small(job, data, name, depth)

    def _match(self, job: Job, data: bytes | memoryview, member: str | None, base: int) -> None:
        timeout = max(1, math.ceil(job.budget.remaining()))
        try:
            found = (job.rules or self.ruleset.rules).match(data=data, timeout=timeout, externals=job.externals(member, data))
        except yara.TimeoutError as exc:
            raise ScanTimeout(f"rules took longer than {self.limits.timeout_s:g}s") from exc
        except yara.Error as exc:
            raise LimitHit(Status.UNREADABLE, f"{member or 'content'}: YARA error: {exc}", fatal=False) from exc
        for hit in found:
            job.add_yara(hit, member, base)

    def _fingerprint(self, job: Job, data: bytes | memoryview, member: str | None, line_offset: int) -> None:
        """Corpus files of the fingerprint indexes that this text copies (fpmatch.py); binary content has none."""
        indexes = job.fingerprints
        if not indexes or _has_nul(data, memoryview(data)):
            return
        from agent.scanning.fpmatch import find  # numpy loads only where an index is in use

        for hit in find(indexes, data, line_offset=line_offset, check=job.budget.remaining):
            job.add_fingerprint(hit, member)

    def _marks(self, job: Job, data: bytes | memoryview, member: str | None) -> None:
        """Watermarks the collector wrote into a copy (agent/marks/), so the event says whose copy this is.

        Canary secrets are left to the canary rules of the vendor's bundle, which name their mark: the
        reader's canary patterns also fit real cloud keys, whose ids must not leave the machine.
        The content is read in slices of MARK_SLICE bytes (overlapping by far more than a frame
        spans), so the decoded text stays small beside the scan's own buffers, and the file's
        deadline is checked between slices."""
        view = memoryview(data)
        if _has_nul(data, view):
            return  # binary content (an image, a compiled file) holds no text to carry a mark
        start = 0
        while True:
            # Content of one slice (most files) is read as it is; the bytes of a larger one are copied.
            piece = data if start == 0 and len(view) <= MARK_SLICE and isinstance(data, bytes) else bytes(view[start : start + MARK_SLICE])
            # Most code is ASCII, which holds no zero-width or look-alike letter: two C-speed passes
            # (several GB/s) spare those texts the reader's prefilter (a few hundred MB/s).
            # The token's last byte is looked for first (memchr, tens of GB/s): text without a "-"
            # (much generated code and data) is spared the search for the whole prefix (13 us a 33 KB file).
            if not (piece.isascii() and (_TOKEN_END not in piece or _TOKEN_PREFIX not in piece)):
                from agent.marks.text import might_carry, read_text

                if might_carry(piece):
                    job.budget.remaining()
                    for found in read_text(piece.decode("utf-8", errors="replace")):
                        if found.carrier != CANARY:
                            job.add_mark(found, member)
            if start + MARK_SLICE >= len(view):
                return
            start += MARK_SLICE - MARK_OVERLAP

    def _check_protected(self, job: Job, sha: str, member: str | None, *, exclude_path: str | None = None) -> None:
        if self.protected is None:
            return
        original = self.protected.lookup(sha, exclude=exclude_path)
        if original is not None:
            job.add_protected(original, member)


def _private_pages(size: int) -> mmap.mmap:
    """Zeroed memory the kernel maps in as it is first touched. Private, not the module's default
    shared mapping: a process forked after this one read into it (``--jobs N``) gets a copy of
    each page it writes, never the same pages to read into at once."""
    if hasattr(mmap, "MAP_PRIVATE"):
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    return mmap.mmap(-1, size)  # Windows: an unnamed mapping is this process's own, and no fork


def _has_nul(data: bytes | memoryview, view: memoryview) -> bool:
    """A NUL in the first ``BINARY_PROBE_BYTES``: binary content. Bytes are searched in place
    (the probe's copy cost as much as the search on small files)."""
    if isinstance(data, bytes):
        return data.find(b"\0", 0, BINARY_PROBE_BYTES) >= 0
    return b"\0" in bytes(view[:BINARY_PROBE_BYTES])


def _fill(f: BinaryIO, view: memoryview) -> int:
    """Read into ``view`` until it is full or the content ends; return the count."""
    filled = 0
    while filled < len(view):
        count = f.readinto(view[filled:])  # type: ignore[attr-defined]
        if not count:
            break
        filled += count
    return filled


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"
