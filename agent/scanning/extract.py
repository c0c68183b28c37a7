"""Members of archives and documents, read through the budget so bombs stay bounded.

``members`` yields what is inside a container; the engine scans each member and
recurses into those that are containers themselves. Formats are chosen by magic
bytes (see sniff.py). Container-level trouble is raised as a non-fatal LimitHit
(the container's own bytes were still scanned); a member that cannot be read
comes out with its ``problem`` set.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import io
import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO, BinaryIO

import zstandard

from agent.scanning.budget import Budget, RawStream
from agent.scanning.doctext import pdf_text
from agent.scanning.errors import LimitHit
from agent.scanning.gitpack import bundle_pack_start, pack_members
from agent.scanning.results import Status
from agent.scanning.sniff import Kind, is_tar

READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,  # zip compression methods Python lacks
    RuntimeError,  # zipfile's "password required"
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    tarfile.TarError,
    zstandard.ZstdError,
)
"""Exceptions that mean "this member (or container) is corrupt", never a crash."""

OFFICE_XML_SUFFIXES = (".xml", ".rels")
_ENCRYPTED_OLE_MARK = "EncryptionInfo".encode("utf-16-le")


@dataclasses.dataclass
class Member:
    """One thing inside a container.

    Exactly one of ``stream``, ``data`` or ``problem`` is set. ``is_xml`` asks
    the engine to scan the text of the member instead of its markup; ``is_text``
    says the data is already extracted text and is not a container.
    """

    name: str
    stream: IO[bytes] | None = None
    data: bytes | None = None
    problem: LimitHit | None = None
    is_xml: bool = False
    is_text: bool = False


def members(kind: Kind, f: BinaryIO, size: int, budget: Budget, *, prefix: str | None) -> Iterator[Member]:
    """Yield the members of container ``f`` (seekable, ``size`` bytes) of ``kind``."""
    if kind is Kind.ZIP:
        yield from _zip_members(f, budget, prefix)
    elif kind is Kind.TAR:
        yield from _tar_members(tarfile.open(fileobj=f, mode="r:"))
    elif kind in _STREAMS:
        yield from _stream_members(kind, f, size, budget, prefix)
    elif kind is Kind.SEVEN_ZIP:
        from agent.scanning.sevenzip import seven_zip_members  # lazily: py7zr is slow to import

        for name, stream in seven_zip_members(f, size, budget, label=_label(prefix)):
            yield Member(name, stream=stream)
    elif kind in (Kind.GIT_PACK, Kind.GIT_BUNDLE):
        start, id_length = bundle_pack_start(f) if kind is Kind.GIT_BUNDLE else (0, 20)
        for item in pack_members(f, start, budget, id_length=id_length):
            yield Member(item.name, data=item.data, problem=item.problem)
    elif kind is Kind.PDF:
        text, cut = pdf_text(f, budget)
        yield Member("text", data=text, is_text=True)
        if cut is not None:
            raise cut
    elif kind is Kind.OLE:
        # Password-protected .docx/.xlsx/.pptx are OLE files with an EncryptionInfo stream.
        if _ENCRYPTED_OLE_MARK in f.read(budget.limits.chunk_bytes):
            raise LimitHit(Status.ENCRYPTED, f"{_label(prefix)}password-protected Office document", fatal=False, uninspected=True)
    elif kind is Kind.RAR:
        raise LimitHit(Status.SKIPPED, f"{_label(prefix)}{kind.value} archive: contents not inspected", fatal=False, uninspected=True)


def _label(prefix: str | None) -> str:
    return f"{prefix}: " if prefix else ""


def _full(prefix: str | None, name: str) -> str:
    return f"{prefix}!{name}" if prefix else name


def _zip_members(f: BinaryIO, budget: Budget, prefix: str | None) -> Iterator[Member]:
    try:
        archive = zipfile.ZipFile(f)
    except READ_ERRORS as exc:
        raise LimitHit(Status.UNREADABLE, f"{_label(prefix)}corrupt zip: {exc}", fatal=False) from exc
    with archive:
        names = set(archive.namelist())
        office = "[Content_Types].xml" in names or {"mimetype", "content.xml"} <= names
        for info in archive.infolist():
            if info.is_dir():
                continue
            full = _full(prefix, info.filename)
            if info.flag_bits & 0x1:
                encrypted = LimitHit(Status.ENCRYPTED, f"{full} is encrypted", fatal=False, uninspected=True)
                yield Member(info.filename, problem=encrypted)
                continue
            try:
                raw = archive.open(info)
            except READ_ERRORS as exc:
                yield Member(info.filename, problem=LimitHit(Status.UNREADABLE, f"{full}: {exc}", fatal=False))
                continue
            with raw:
                stream = budget.reader(raw, name=full, compressed_size=info.compress_size)
                is_xml = office and info.filename.lower().endswith(OFFICE_XML_SUFFIXES)
                yield Member(info.filename, stream=stream, is_xml=is_xml)


def _tar_members(archive: tarfile.TarFile) -> Iterator[Member]:
    """Regular files of a tar; links, devices and fifos inside it are not content."""
    with archive:
        for info in archive:
            if not info.isreg():
                continue
            stream = archive.extractfile(info)
            if stream is not None:
                yield Member(info.name, stream=stream)


def _stream_members(kind: Kind, f: BinaryIO, size: int, budget: Budget, prefix: str | None) -> Iterator[Member]:
    """A compressed stream (gzip, bzip2, xz, zstd, lz4, zlib): a tar inside is opened in place, else one member."""
    name = _gzip_name(f) if kind is Kind.GZIP else None
    f.seek(0)
    raw = _STREAMS[kind](f)
    with raw:
        inner_name = name or "data"
        stream = budget.reader(raw, name=_full(prefix, inner_name), compressed_size=size)
        if is_tar(stream.peek(512)[:512]):
            # Streaming mode reads members in order without seeking back.
            yield from _tar_members(tarfile.open(fileobj=stream, mode="r|"))
        else:
            yield Member(inner_name, stream=stream)


def _zstd(f: BinaryIO) -> RawStream:
    return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)


def _lz4(f: BinaryIO) -> RawStream:
    import lz4.frame  # type: ignore[import-untyped]  # lazily: few files need it

    return lz4.frame.LZ4FrameFile(f)


class _ZlibRaw(io.RawIOBase):
    """A zlib stream as a file: the standard library only offers it for gzip."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self._inflater = zlib.decompressobj()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._inflater.eof:
            data = self._inflater.unconsumed_tail or self._f.read(64 * 1024)
            if not data:
                raise EOFError("zlib stream ends early")
            out = self._inflater.decompress(data, len(buffer))
            if out:
                buffer[: len(out)] = out
                return len(out)
        return 0


_STREAMS: dict[Kind, Callable[[BinaryIO], RawStream]] = {
    Kind.GZIP: lambda f: gzip.GzipFile(fileobj=f, mode="rb"),
    Kind.BZIP2: bz2.BZ2File,
    Kind.XZ: lzma.LZMAFile,
    Kind.ZSTD: _zstd,
    Kind.LZ4: _lz4,
    Kind.ZLIB: lambda f: io.BufferedReader(_ZlibRaw(f)),
}


def _gzip_name(f: BinaryIO) -> str | None:
    """The original file name stored in a gzip header (FNAME), if any."""
    f.seek(0)
    head = f.read(4096)
    if len(head) < 10 or not head[3] & 0x08:
        return None
    pos = 10
    if head[3] & 0x04:  # FEXTRA: two-byte length, then that many bytes
        if len(head) < 12:
            return None
        pos += 2 + int.from_bytes(head[10:12], "little")
    end = head.find(b"\0", pos)
    if end <= pos:
        return None
    return head[pos:end].decode("latin-1").replace("/", "_") or None
