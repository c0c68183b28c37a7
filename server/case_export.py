"""A case's evidence file: one zip with the case as JSON, a readable HTML summary, and their SHA-256 manifest.

The file stands on its own: ``case.json`` holds the case, its events as the review API shows
them, its comments, and every audit entry of the case with its chain position (``seq``,
``prev_hash``, ``hash``) and the exact text the hash covers, so anyone can recompute each hash
without the collector; beside them the result of walking the whole chain at export time.
``summary.html`` is the same for people (escaped by the UI's template environment, no scripts
or outside resources). ``SHA256SUMS`` lists both in ``sha256sum -c`` form. What an account
exports is what it may see; the export itself is audited before it is read, so the file carries
its own entry.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from server.db.tables import audit_log
from server.pseudonyms import Pseudonyms
from server.store import audit, case_history, cases
from server.store.scope import Scope
from server.store.sql import iso
from server.store.users import User
from server.ui.render import templates

FORMAT = "dlp-case-evidence/1"
MANIFEST = "SHA256SUMS"


def chained_text(entry: dict[str, Any]) -> str:
    """What an entry's hash covers after its ``prev_hash`` (server/store/audit.py): recompute with
    ``sha256(prev_hash + chained_text)``."""
    return json.dumps(
        [entry["seq"], entry["at"], entry["actor"], entry["action"], entry["target"], entry["details_json"]], ensure_ascii=False, separators=(",", ":")
    )


def _entries(conn: Connection, case_id: int, actor: User, visible_ids: set[str]) -> list[dict[str, Any]]:
    rows = case_history.audit_rows(conn, case_id=case_id)
    entries: list[dict[str, Any]] = []
    for row, details in case_history.shown_history(rows, visible_ids=visible_ids, actor=actor):
        position = {"seq": row.seq, "prev_hash": row.prev_hash, "hash": row.hash}
        if details is None:
            entries.append({**position, "withheld": True})
        else:
            entry = {**position, "at": iso(row.at), "actor": row.actor, "action": row.action, "target": row.target, "details_json": row.details}
            entries.append({**entry, "details": details})
    return entries


def evidence(
    conn: Connection, *, case_id: int, actor: User, scope: Scope, pseudonyms: Pseudonyms | None, address: str | None, now: datetime
) -> tuple[str, bytes]:
    """Audit the export, then build the evidence zip; returns (file name, bytes). Runs in one write transaction."""
    shown = cases.get(conn, case_id=case_id, actor=actor, scope=scope, now=now, pseudonyms=pseudonyms)
    details = {"events": len(shown["events"]), "comments": len(shown["comments"])}
    audit.append(conn, actor=actor.name, action="case.export", target=f"case:{case_id}", details=details, address=address, now=now)
    first = conn.execute(select(func.min(audit_log.c.seq)).where(audit_log.c.target == f"case:{case_id}")).scalar_one()
    # From the case's first entry to the head (through the newest checkpoint a full walk left), not
    # the whole history: what proves this case's entries, at the cost of what came since the checkpoint.
    span = audit.verify_span(conn, since=first)
    check = span.check
    case = {key: value for key, value in shown.items() if key not in ("events", "comments", "history", "people")}
    document = {
        "format": FORMAT,
        "exported_at": iso(now),
        "exported_by": actor.name,
        "case": case,
        "events": shown["events"],
        "comments": shown["comments"],
        "audit": _entries(conn, case_id, actor, {item["id"] for item in shown["events"]}),
        "chain": {"ok": check.ok, "from_seq": first, "checkpoint": span.checkpoint, "entries": check.entries, "problem": check.problem},
    }
    case_json = json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True).encode("utf-8")
    summary = templates.get_template("case_export.html").render(doc=document, now=now).encode("utf-8")
    files = {"case.json": case_json, "summary.html": summary}
    manifest = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in files.items()).encode("ascii")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in {**files, MANIFEST: manifest}.items():
            info = zipfile.ZipInfo(name, date_time=now.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return f"case-{case_id}-{now.strftime('%Y%m%dT%H%M%SZ')}.zip", buffer.getvalue()
