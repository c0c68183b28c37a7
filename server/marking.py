"""Watermarking files for a seat and tracing files back to seats: what the CLI, the API and the UI call.

Marking runs outside any database transaction (a large document takes a moment and SQLite has one
writer): payloads are drawn first, the copies written, and then one transaction registers every
mark with its marked copy's hash and the audit entry naming them. A file that cannot carry a mark
is reported and the others are still marked. Tracing reads every carrier of every file first,
then resolves and audits in one transaction: who looked for which marks is itself a record.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.marks.payload import PAYLOAD_BYTES, Found
from server.db.engine import Database
from server.errors import InvalidInput
from server.store import audit
from server.store import marks as mark_store

MAX_FILES = 100
MAX_NOTE_CHARS = 1000
MAX_NAME_CHARS = 255
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class Applied:
    """One file marked: the copy to hand to the seat, and the mark it carries."""

    name: str
    mark_id: str
    format: str
    carriers: tuple[str, ...]
    data: bytes
    size: int
    marked_size: int


@dataclass(frozen=True)
class Refused:
    """One file that could not be marked (a format no marker writes, too little text, a corrupt file)."""

    name: str
    error: str


@dataclass(frozen=True)
class _Prepared:
    name: str
    payload: bytes
    original: bytes
    marked: Any  # agent.marks.documents.Marked


def _clean(text: str, limit: int) -> str:
    """``text`` bounded to ``limit`` characters, every control character or lone surrogate as ``?``."""
    return "".join(c if c.isprintable() and mark_store.storable(c) else "?" for c in text[:limit])


def _name(name: str) -> str:
    """A file's name as recorded: its base name, bounded, without control characters."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return _clean(base, MAX_NAME_CHARS) or "file"


def _problem(exc: BaseException) -> str:
    """Why one file was refused, as audit entries and answers repeat it: a hostile file chooses
    much of an exception's text, so it is bounded and holds no control character."""
    return _clean(str(exc) or type(exc).__name__, MAX_ERROR_CHARS) or type(exc).__name__


def _check(files: Sequence[tuple[str, bytes]], note: str | None) -> None:
    if not files:
        raise InvalidInput("no files given")
    if len(files) > MAX_FILES:
        raise InvalidInput(f"at most {MAX_FILES} files at a time")
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise InvalidInput(f"a note is at most {MAX_NOTE_CHARS} characters")
    if note is not None and not mark_store.storable(note):
        raise InvalidInput("a note may not hold NUL characters or lone surrogates")


def apply(
    db: Database,
    *,
    key: bytes,
    files: Sequence[tuple[str, bytes]],
    vendor: str,
    seat: str | None,
    actor: str,
    now: datetime,
    note: str | None = None,
    address: str | None = None,
) -> list[Applied | Refused]:
    """A marked copy of each file for ``vendor``'s ``seat``, in the order given (audited ``marks.apply``)."""
    from agent.marks.documents import mark_file  # pypdf and the OOXML marker load on first use

    _check(files, note)
    seat = mark_store.clean_seat(seat)
    with db.read() as conn:
        mark_store.vendor_id(conn, vendor)  # refuse an unknown vendor before any work
    prepared: list[_Prepared | Refused] = []
    for raw_name, data in files:
        name = _name(raw_name)
        payload = secrets.token_bytes(PAYLOAD_BYTES)
        try:
            marked = mark_file(data, raw_name, payload)
        except Exception as exc:  # noqa: BLE001 - Unmarkable, a corrupt file, or a hostile one (KeyError, RecursionError, MemoryError): that file only
            prepared.append(Refused(name, _problem(exc)))
            continue
        prepared.append(_Prepared(name, payload, data, marked))
    results: list[Applied | Refused] = []
    with db.write() as conn:
        for item in prepared:
            if isinstance(item, Refused):
                results.append(item)
                continue
            results.append(_register(conn, key=key, item=item, vendor=vendor, seat=seat, actor=actor, now=now, note=note))
        audit.append(
            conn,
            actor=actor,
            action="marks.apply",
            target=vendor,
            details={
                "seat": seat,
                "note": note or "",
                "marked": [{"name": r.name, "mark_id": r.mark_id, "format": r.format} for r in results if isinstance(r, Applied)],
                "refused": [{"name": r.name, "error": r.error} for r in results if isinstance(r, Refused)],
            },
            address=address,
            now=now,
        )
    return results


def _register(conn: Any, *, key: bytes, item: _Prepared, vendor: str, seat: str | None, actor: str, now: datetime, note: str | None) -> Applied | Refused:
    marked = item.marked
    marked_sha256 = hashlib.sha256(marked.data).hexdigest()
    subject = {
        "name": item.name,
        "sha256": hashlib.sha256(item.original).hexdigest(),
        "size": len(item.original),
        "format": marked.format,
        "carriers": list(marked.carriers),
        "note": note or "",
    }
    try:
        mark, _ = mark_store.mint(conn, key=key, kind="watermark", vendor=vendor, seat=seat, subject=subject, created_by=actor, now=now, payload=item.payload)
    except InvalidInput:  # 48 random bits drawn twice: mark that file again
        return Refused(item.name, "payload clash; mark the file again")
    mark_store.record_copy(conn, mark_id=mark["mark_id"], marked_sha256=marked_sha256, marked_size=len(marked.data))
    return Applied(item.name, mark["mark_id"], marked.format, tuple(marked.carriers), marked.data, len(item.original), len(marked.data))


def trace(db: Database, *, key: bytes, files: Sequence[tuple[str, bytes]], actor: str, now: datetime, address: str | None = None) -> list[dict[str, Any]]:
    """For each file ``{"name", "sha256", "marks": [...]}`` (server/store/marks.py ``resolve``), or
    ``{"name", "sha256", "marks": [], "error"}`` when it could not be read (audited ``marks.trace``)."""
    from agent.marks.documents import read_file  # pypdf and the OOXML reader load on first use

    _check(files, None)
    read_files: list[tuple[str, str, list[Found] | str]] = []
    for raw_name, data in files:
        sha256 = hashlib.sha256(data).hexdigest()
        try:
            found: list[Found] | str = read_file(data, raw_name)
        except Exception as exc:  # noqa: BLE001 - a file no reader copes with is reported, the others still traced
            found = _problem(exc)
        read_files.append((_name(raw_name), sha256, found))
    items: list[dict[str, Any]] = []
    with db.write() as conn:
        for name, sha256, found in read_files:
            if isinstance(found, str):
                items.append({"name": name, "sha256": sha256, "marks": [], "error": found})
                continue
            items.append({"name": name, "sha256": sha256, "marks": mark_store.resolve(conn, key=key, found=found, sha256=sha256)})
        audit.append(
            conn,
            actor=actor,
            action="marks.trace",
            details={"files": [{"name": i["name"], "sha256": i["sha256"], "marks": [m["mark_id"] for m in i["marks"]], **({"error": i["error"]} if "error" in i else {})} for i in items]},
            address=address,
            now=now,
        )
    return items
