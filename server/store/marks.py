"""Marks the collector minted (watermarks and canaries) and the resolution of what readers found back to them.

A mark is a payload given to one vendor's seat: 6 random bytes a watermark carries, or a canary
secret's text. The database keeps only the payload's keyed digest (HMAC-SHA256 with the data
directory's ``marks.key``, server/keys.py), so a reader of the database alone can neither tell which
payload a mark has nor make a file that traces to a seat. Everything that names a payload resolves
it here: ``dlp-server trace``, the API and UI upload, and ingest's hook for agents' mark matches,
which also drops every payload from the stored event (the database must never hold one) and tells
ingest which marks turned up on another seat's workstation (``agent.mark_elsewhere``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, tuple_

from agent.events import AGENT_CLAIMS, COLLECTOR_FIELDS, EGRESS_POLICY, MARK_MATCH, MARKS
from agent.marks.payload import CANARY, CARRIERS, COPY, PAYLOAD_BYTES, PROPERTY, TOKEN, Found
from server.db.tables import marks, vendors
from server.decoys import KINDS as CANARY_KINDS
from server.errors import InvalidInput, NotFound
from server.store.sql import iso

log = logging.getLogger(__name__)

KINDS = ("watermark", "canary")
MAX_SEAT_CHARS = 255
MAX_FOUND = 10_000
"""Payloads one resolve looks up: a hostile file could hold any number of tokens."""
_LOOKUP_CHUNK = 500
_CONCLUSIVE = frozenset({CANARY, COPY, PROPERTY, TOKEN})
"""Carriers that write the whole frame (or the secret) verbatim: one hit cannot be chance."""

Entry = tuple[dict[str, Any], datetime, str | None]
"""One record of an ingest batch: its column values, when it occurred, its encoded body (store/ingest.py)."""


def digest(key: bytes, payload: bytes) -> str:
    """The keyed digest a mark is stored and found by."""
    return hmac.new(key, b"dlp-mark\0" + payload, hashlib.sha256).hexdigest()


def vendor_id(conn: Connection, name: str) -> int:
    if not storable(name):  # no vendor has such a name, and PostgreSQL text could not hold it
        raise NotFound(f"no vendor {name[:128]!r}")
    row = conn.execute(select(vendors.c.id).where(vendors.c.name == name)).first()
    if row is None:
        raise NotFound(f"no vendor {name!r}")
    return int(row.id)


def storable(text: str) -> bool:
    """False for text the database cannot hold: a NUL character or a lone surrogate."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def clean_seat(seat: str | None) -> str | None:
    """A seat as stored: trimmed, None when empty; refused when over-long or holding control characters."""
    if seat is None:
        return None
    if not isinstance(seat, str):
        raise InvalidInput("a seat must be text")
    seat = seat.strip()
    if not seat:
        return None
    if len(seat) > MAX_SEAT_CHARS:
        raise InvalidInput(f"a seat is at most {MAX_SEAT_CHARS} characters")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in seat) or not storable(seat):
        raise InvalidInput("a seat may not hold control characters or lone surrogates")
    return seat


def public(row: Any) -> dict[str, Any]:
    """A mark as the admin API, CLI and UI show it (never its payload nor its digest)."""
    return {
        "mark_id": row.id,
        "kind": row.kind,
        "canary_kind": row.canary_kind,
        "vendor": row.vendor,
        "seat": row.seat,
        "subject": dict(row.subject or {}),
        "marked_sha256": row.marked_sha256,
        "created_by": row.created_by,
        "created_at": iso(row.created_at),
    }


def _select() -> Any:
    return select(marks, vendors.c.name.label("vendor")).join(vendors, vendors.c.id == marks.c.vendor_id)


def mint(
    conn: Connection,
    *,
    key: bytes,
    kind: str,
    vendor: str,
    seat: str | None,
    subject: dict[str, Any],
    created_by: str,
    now: datetime,
    payload: bytes | None = None,
    canary_kind: str | None = None,
) -> tuple[dict[str, Any], bytes]:
    """Register a new mark and return it (``public``) with its payload, which the caller writes
    into a file and then forgets. A watermark gets 6 random bytes unless ``payload`` is given; a
    canary's payload is its secret's text, and its ``rule_sha256`` lets a YARA rule find the
    secret without holding it. Not audited here: the callers audit what they made."""
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}")
    if kind == "canary":
        if canary_kind not in CANARY_KINDS:
            raise InvalidInput(f"a canary's kind must be one of {', '.join(CANARY_KINDS)}")
        if not payload:
            raise InvalidInput("a canary needs its secret")
    elif canary_kind is not None:
        raise InvalidInput("only a canary has a canary kind")
    owner = vendor_id(conn, vendor)
    seat = clean_seat(seat)
    for _ in range(8):
        chosen = payload if payload is not None else secrets.token_bytes(PAYLOAD_BYTES)
        hashed = digest(key, chosen)
        if conn.execute(select(marks.c.id).where(marks.c.digest == hashed)).first() is None:
            break
        if payload is not None:
            raise InvalidInput("that payload is already registered")
    else:  # 48 random bits clashing eight times in a row: the random source is broken
        raise RuntimeError("could not draw an unused watermark payload")
    mark_id = "mk_" + secrets.token_hex(8)
    conn.execute(
        marks.insert().values(
            id=mark_id,
            digest=hashed,
            kind=kind,
            canary_kind=canary_kind,
            vendor_id=owner,
            seat=seat,
            subject=subject,
            marked_sha256=None,
            rule_sha256=hashlib.sha256(chosen).hexdigest() if kind == "canary" else None,
            created_by=created_by,
            created_at=now,
        )
    )
    return get(conn, mark_id=mark_id), chosen


def get(conn: Connection, *, mark_id: str) -> dict[str, Any]:
    row = conn.execute(_select().where(marks.c.id == mark_id)).first()
    if row is None:
        raise NotFound(f"no mark {mark_id!r}")
    return public(row)


def record_copy(conn: Connection, *, mark_id: str, marked_sha256: str, marked_size: int) -> None:
    """Remember the marked copy the collector wrote, so a byte-identical find is a ``copy`` hit."""
    row = conn.execute(select(marks.c.subject).where(marks.c.id == mark_id)).first()
    if row is None:
        raise NotFound(f"no mark {mark_id!r}")
    subject = {**(row.subject or {}), "marked_sha256": marked_sha256, "marked_size": marked_size}
    conn.execute(marks.update().where(marks.c.id == mark_id).values(marked_sha256=marked_sha256, subject=subject))


def strength(carriers: Sequence[str], frames: int) -> str:
    """How strong the evidence of one mark in one file is.

    Conclusive: a carrier that writes the whole frame or secret verbatim (canary, copy, property,
    token), or two independent carriers agreeing. Strong: one carrier with two frames or more.
    Moderate: a single frame of a single carrier (its CRC passed and its digest is registered,
    yet it is one 64-bit reading)."""
    if _CONCLUSIVE & set(carriers) or len(set(carriers)) >= 2:
        return "conclusive"
    return "strong" if frames >= 2 else "moderate"


_RANK = {"conclusive": 0, "strong": 1, "moderate": 2}


def resolve(conn: Connection, *, key: bytes, found: Sequence[Found], sha256: str | None = None) -> list[dict[str, Any]]:
    """Every registered mark among ``found`` (and a ``copy`` hit when ``sha256`` is a marked copy's),
    strongest evidence first. Payloads nobody registered are chance or forgery: ignored."""
    by_digest: dict[str, list[Found]] = {}
    for item in list(found)[:MAX_FOUND]:
        if item.carrier in CARRIERS and item.payload:
            by_digest.setdefault(digest(key, item.payload), []).append(item)
    hits: dict[str, tuple[Any, list[tuple[str, int]]]] = {}
    digests = list(by_digest)
    for start in range(0, len(digests), _LOOKUP_CHUNK):
        for row in conn.execute(_select().where(marks.c.digest.in_(digests[start : start + _LOOKUP_CHUNK]))):
            hits[row.id] = (row, [(f.carrier, f.frames) for f in by_digest[row.digest]])
    if sha256:
        for row in conn.execute(_select().where(marks.c.marked_sha256 == sha256.lower())):
            hits.setdefault(row.id, (row, []))[1].append((COPY, 1))
    results = [_resolved(row, evidence) for row, evidence in hits.values()]
    return sorted(results, key=lambda r: (_RANK[r["evidence"]["strength"]], r["mark_id"]))


def _resolved(row: Any, evidence: list[tuple[str, int]]) -> dict[str, Any]:
    carriers = sorted({carrier for carrier, _ in evidence})
    frames = sum(count for _, count in evidence)
    subject = row.subject or {}
    return {
        "mark_id": row.id,
        "vendor": row.vendor,
        "seat": row.seat,
        "kind": row.kind,
        "canary_kind": row.canary_kind,
        "minted_at": iso(row.created_at),
        "minted_by": row.created_by,
        "subject": {"name": subject.get("name"), "format": subject.get("format")},
        "evidence": {"carriers": carriers, "frames": frames, "strength": strength(carriers, frames)},
    }


def list_marks(conn: Connection, *, vendor: str | None = None, seat: str | None = None, kind: str | None = None, limit: int = 100, before: str | None = None) -> list[dict[str, Any]]:
    """Marks newest first; ``before`` (a mark id) continues after that mark. ``seat`` matches case-insensitively."""
    if kind is not None and kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}")
    query = _select().order_by(marks.c.created_at.desc(), marks.c.id.desc()).limit(max(1, min(limit, 1000)))
    if vendor:
        query = query.where(vendors.c.name == vendor)
    if seat:
        query = query.where(marks.c.seat.ilike(seat.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_"), escape="\\"))
    if kind:
        query = query.where(marks.c.kind == kind)
    if before:
        after = conn.execute(select(marks.c.created_at, marks.c.id).where(marks.c.id == before)).first()
        if after is None:
            raise InvalidInput(f"no mark {before!r} to continue after")
        query = query.where(tuple_(marks.c.created_at, marks.c.id) < tuple_(after.created_at, after.id))
    return [public(row) for row in conn.execute(query)]


def canary_rules_for(conn: Connection, *, vendor: str) -> list[tuple[str, str, str]]:
    """``(mark_id, canary_kind, rule_sha256)`` of the vendor's canaries, oldest first: its rule pack's content."""
    owner = vendor_id(conn, vendor)
    rows = conn.execute(select(marks.c.id, marks.c.canary_kind, marks.c.rule_sha256).where(marks.c.vendor_id == owner, marks.c.kind == "canary").order_by(marks.c.created_at, marks.c.id))
    return [(row.id, row.canary_kind, row.rule_sha256) for row in rows]


# --- ingest -------------------------------------------------------------------------------------

_MARK_MATCH_TEXT = f'"kind":"{MARK_MATCH}"'
"""How a mark match appears in a body the API encoded (compact JSON): the cheap test that spares
every other batch a JSON parse."""


def _mark_matches(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in record.get("matches") or () if isinstance(m, dict) and m.get("kind") == MARK_MATCH]


def carries_marks(record: dict[str, Any]) -> bool:
    """True for a stored body that ingest rewrote for its mark matches (so its ``marks`` and
    ``agent_claims`` are the collector's): bodies with mark matches are always rewritten."""
    return bool(_mark_matches(record))


def _host_forms(name: str) -> set[str]:
    """A workstation name as given and its short form (``ws-1.corp.example`` -> ``ws-1``)."""
    name = name.strip().casefold()
    return {name, name.split(".", 1)[0]} - {""}


def _user_forms(name: str) -> set[str]:
    """A user name as given and without its domain (``CORP\\jdoe``, ``jdoe@corp.example`` -> ``jdoe``)."""
    name = name.strip().casefold()
    return {name, name.rsplit("\\", 1)[-1].split("@", 1)[0]} - {""}


def same_seat(seat: str, *, hostname: str, user: Any) -> bool:
    """True when a mark's free-text ``seat`` names this workstation or this user, whichever way
    either is written: a host by its full or short name, a user with or without its domain."""
    if _host_forms(seat) & _host_forms(hostname):
        return True
    return isinstance(user, str) and bool(_user_forms(seat) & _user_forms(user))


def _seen_elsewhere(mark: dict[str, Any], *, vendor: str, hostname: str, user: Any) -> bool:
    if mark["vendor"] != vendor:
        return True
    seat = mark["seat"]
    if not seat:
        return False
    return not same_seat(seat, hostname=hostname, user=user)


def _resolve_matches(conn: Connection, key: Callable[[], bytes] | None, matches: list[dict[str, Any]], *, vendor_id: int) -> list[dict[str, Any]]:
    """The marks an agent's matches name. A payload counts when its digest is registered, except
    one the agent says is a ``copy`` (only the collector knows its marked copies' hashes); a
    ``mark_id`` (a canary rule's meta) counts only for a canary of the agent's own vendor, whose
    rules its bundle holds, and is shown as the ``canary`` carrier whatever the agent called it."""
    found: list[Found] = []
    named: set[str] = set()
    for match in matches:
        carrier = match.get("carrier")
        payload, mark_id = match.get("payload"), match.get("mark_id")
        if isinstance(payload, str) and isinstance(carrier, str):
            if carrier == COPY:
                continue
            try:
                found.append(Found(carrier, bytes.fromhex(payload), int(match.get("frames") or 1)))
            except ValueError:
                continue
        elif isinstance(mark_id, str):
            named.add(mark_id)
    resolved: list[dict[str, Any]] = []
    if found:
        if key is None:
            log.warning("mark matches arrived without the marks key to resolve them; stored unresolved")
        else:
            resolved = resolve(conn, key=key(), found=found)
    merged = {r["mark_id"]: r for r in resolved}
    if named:
        wanted = sorted(named)[:_LOOKUP_CHUNK]
        for row in conn.execute(_select().where(marks.c.id.in_(wanted), marks.c.kind == "canary", marks.c.vendor_id == vendor_id)):
            kept = merged.get(row.id)
            if kept is None:
                merged[row.id] = _resolved(row, [(CANARY, 1)])
            else:  # a canary rule naming a mark a payload also resolved: both carriers count
                carriers = sorted(set(kept["evidence"]["carriers"]) | {CANARY})
                kept["evidence"] = {**kept["evidence"], "carriers": carriers, "strength": strength(carriers, kept["evidence"]["frames"])}
    return list(merged.values())


def on_ingest(conn: Connection, *, key: Callable[[], bytes] | None, agent: Any, entries: dict[str, Entry]) -> tuple[dict[str, Entry], dict[str, list[dict[str, Any]]]]:
    """Rewrite the batch's records that hold mark matches: ``marks`` set to the registered marks
    their payloads and canary rules resolved to, every match's ``payload`` dropped, names only the
    collector may set moved under ``agent_claims``. Returns the entries (others untouched) and, by
    event id, the marks seen on another seat's or vendor's workstation. ``key`` is called only
    when a batch holds a payload to resolve."""
    rewritten: dict[str, Entry] = {}
    elsewhere: dict[str, list[dict[str, Any]]] = {}
    for event_id, (record, occurred_at, body) in entries.items():
        if body is not None and _MARK_MATCH_TEXT not in body:
            rewritten[event_id] = (record, occurred_at, body)
            continue
        full = json.loads(body) if body is not None else dict(record)
        matches = _mark_matches(full)
        if not matches:
            rewritten[event_id] = (record, occurred_at, body)
            continue
        resolved = _resolve_matches(conn, key, matches, vendor_id=agent.vendor_id)
        shown = []
        for mark in resolved:
            away = _seen_elsewhere(mark, vendor=agent.vendor, hostname=agent.hostname, user=full.get("user"))
            shown.append(
                {
                    "mark_id": mark["mark_id"],
                    "vendor": mark["vendor"],
                    "seat": mark["seat"],
                    "kind": mark["kind"],
                    "minted_at": mark["minted_at"],
                    "carriers": mark["evidence"]["carriers"],
                    "elsewhere": away,
                }
            )
        stored = _judged(full, shown)
        if any(m["elsewhere"] for m in shown):
            elsewhere[event_id] = [m for m in shown if m["elsewhere"]]
        rewritten[event_id] = (record, occurred_at, json.dumps(stored, ensure_ascii=False, separators=(",", ":")))
    return rewritten, elsewhere


def _judged(full: dict[str, Any], shown: list[dict[str, Any]]) -> dict[str, Any]:
    body = dict(full)
    body["matches"] = [{k: v for k, v in m.items() if k != "payload"} if isinstance(m, dict) else m for m in body.get("matches") or ()]
    if body.get("channel") == "egress":
        # egress.apply ran first: its verdict and agent_claims are the collector's already
        claims = dict(body.pop(AGENT_CLAIMS, None) or {})
        verdict = body.pop(EGRESS_POLICY, None)
    else:
        claims = {name: body.pop(name) for name in sorted(COLLECTOR_FIELDS & body.keys())}
        if AGENT_CLAIMS in body:
            claims[AGENT_CLAIMS] = body.pop(AGENT_CLAIMS)
        verdict = None
    claims.update({name: body.pop(name) for name in sorted(COLLECTOR_FIELDS & body.keys())})
    body[MARKS] = shown
    if verdict is not None:
        body[EGRESS_POLICY] = verdict
    if claims:
        body[AGENT_CLAIMS] = claims
    return body


def elsewhere_details(record: dict[str, Any], event_id: str) -> dict[str, Any]:
    """What an ``agent.mark_elsewhere`` event repeats of the event whose marks belong elsewhere."""
    return {"related_event": event_id, **{name: record.get(name) for name in ("path", "sha256", "user") if record.get(name) is not None}}
