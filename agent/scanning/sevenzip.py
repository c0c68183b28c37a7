"""Members of 7z archives (py7zr), spilled to disk past a chunk so memory stays flat.

py7zr decompresses a solid block in one go and cannot be stopped from outside, so the
bounds are checked before extraction from the sizes the archive declares, and handed to
py7zr as its own bomb limit (``max_extract_size``) in case the declared sizes lie.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import BinaryIO

import py7zr
from py7zr.io import Py7zIO, WriterFactory

from agent.scanning.budget import Budget
from agent.scanning.errors import LimitHit
from agent.scanning.results import Status


def seven_zip_members(f: BinaryIO, size: int, budget: Budget, *, label: str) -> Iterator[tuple[str, BinaryIO]]:
    """Yield (name, stream) for every file of the 7z archive ``f`` (``size`` bytes).

    Raises:
        LimitHit: ``encrypted`` (password-protected content or names), ``too_large``
            (declared sizes past the budget or the ratio), ``unreadable`` (corrupt).
    """
    try:
        archive = py7zr.SevenZipFile(f, mode="r", max_extract_size=_room(budget))
    except py7zr.PasswordRequired as exc:
        raise LimitHit(Status.ENCRYPTED, f"{label}7z archive with encrypted names", fatal=False, uninspected=True) from exc
    except Exception as exc:  # py7zr raises many types on hostile input; all mean "cannot read"
        raise LimitHit(Status.UNREADABLE, f"{label}corrupt 7z archive: {type(exc).__name__}: {exc}", fatal=False) from exc
    with archive:
        if "7zAES" in archive._get_method_names():  # py7zr has no public "is encrypted"
            raise LimitHit(Status.ENCRYPTED, f"{label}password-protected 7z archive", fatal=False, uninspected=True)
        declared = sum(info.uncompressed for info in archive.list() if not info.is_directory)
        if declared > max(size * budget.limits.max_ratio, budget.limits.ratio_slack_bytes):
            raise LimitHit(Status.TOO_LARGE, f"{label}7z compression ratio above {budget.limits.max_ratio:g}:1", fatal=False)
        if declared > _room(budget):
            raise LimitHit(Status.TOO_LARGE, f"more than {budget.limits.max_extracted_bytes} bytes extracted", fatal=True)
        budget.remaining()
        factory = _SpillFactory(budget.limits.chunk_bytes)
        try:
            archive.extractall(factory=factory)
        except py7zr.DecompressionBombError as exc:
            raise LimitHit(Status.TOO_LARGE, f"{label}7z archive larger than it declares", fatal=True) from exc
        except py7zr.PasswordRequired as exc:
            raise LimitHit(Status.ENCRYPTED, f"{label}password-protected 7z archive", fatal=False, uninspected=True) from exc
        except Exception as exc:  # as above
            raise LimitHit(Status.UNREADABLE, f"{label}corrupt 7z archive: {type(exc).__name__}: {exc}", fatal=False) from exc
        budget.add_bytes(sum(spill.size() for spill in factory.files.values()))
    for name, spill in factory.files.items():
        with spill.file:
            spill.file.seek(0)
            yield name, spill.file  # type: ignore[misc]


def _room(budget: Budget) -> int:
    return max(1, budget.limits.max_extracted_bytes - budget.extracted)


class _Spill(Py7zIO):
    """One extracted file: in memory up to a chunk, then in an unlinked temporary file."""

    def __init__(self, max_memory: int):
        self.file = tempfile.SpooledTemporaryFile(max_size=max_memory)
        self._size = 0

    def write(self, s: bytes | bytearray) -> int:
        self._size += len(s)
        return self.file.write(s)

    def read(self, size: int | None = None) -> bytes:
        return self.file.read(size if size is not None else -1)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def flush(self) -> None:
        self.file.flush()

    def size(self) -> int:
        return self._size


class _SpillFactory(WriterFactory):
    def __init__(self, max_memory: int):
        self._max_memory = max_memory
        self.files: dict[str, _Spill] = {}

    def create(self, filename: str) -> Py7zIO:
        spill = self.files[filename] = _Spill(self._max_memory)
        return spill
