"""Bulk export of events for a SIEM or a spreadsheet: JSON lines, CSV or CEF."""

from __future__ import annotations

import csv
import functools
import json
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal, TextIO

from agent.display import BIDI_CONTROLS, LAYOUT, TERMINAL, visible
from server.siem.cef import format_cef
from server.siem.fields import (
    destination_facts,
    device_label,
    egress_verdict,
    enforcement_facts,
    fingerprint_sources,
    process_facts,
    refs_list,
    repository_facts,
    rule_kinds,
    rule_names,
    text,
    triage_status,
)

Format = Literal["jsonl", "csv", "cef"]

CSV_COLUMNS = (
    "id", "seq", "received_at", "occurred_at", "vendor", "agent_id", "host", "user", "channel", "type",
    "severity", "status", "path", "sha256", "size", "rules", "device", "source_ip", "source_country",
    "triage_status", "rule_kinds", "fingerprint_sources", "process_exe", "process_pid", "process_cmdline",
    "process_user", "enforcement_action", "enforcement_outcome", "destination_host", "destination_url",
    "destination_tool", "repository_path", "repository_protected", "refs", "egress_allowed",
)  # fmt: skip

# A cell a spreadsheet may read as a formula (OWASP's CSV injection list: = + - @ tab CR), also
# behind leading whitespace, which some spreadsheets trim before they look (" =cmd", "\n@SUM").
_FORMULA = re.compile(r"[\t\r]|\s*[=+\-@]")
# Left raw by json.dumps(ensure_ascii=False), yet line breaks to str.splitlines() (U+0085, U+2028,
# U+2029), terminal controls (DEL, C1 such as CSI U+009B), bidi controls that reorder what a
# viewer shows, or unwritable as UTF-8 (lone surrogates); as \u escapes they are the same JSON.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff" + "".join(sorted(BIDI_CONTROLS)) + "]")


def write_events(
    events: Iterable[dict[str, Any]], out: TextIO, *, fmt: Format, product_version: str, terminal: bool = False
) -> int:
    """Write ``events`` to ``out`` one at a time and return how many were written.

    jsonl: one compact JSON object per line; controls, bidi controls and line
    separators are ``\\u`` escapes, never raw. csv: a header row, then the columns in
    ``CSV_COLUMNS`` (open ``out`` with ``newline=""``, as the csv module asks); a
    would-be formula gets a leading ``'``, controls and bidi controls show as
    ``<U+XXXX>``. cef: one CEF line per event. ``product_version`` goes into CEF
    lines only.

    Args:
        terminal: ``out`` may be a terminal (standard output): CSV cells then keep no
            tab, CR or LF either, so no cell can rewrite or split what is on screen.
            Written to a file, they stay inside their quoted cells as data.

    Raises:
        ValueError: an unknown format (before anything is written).
    """
    writers: dict[str, Callable[[Iterable[dict[str, Any]], TextIO, str], int]] = {
        "jsonl": _write_jsonl,
        "csv": functools.partial(_write_csv, keep=TERMINAL if terminal else LAYOUT),
        "cef": _write_cef,
    }
    if fmt not in writers:
        raise ValueError(f"export format must be jsonl, csv or cef, not {fmt!r}")
    return writers[fmt](events, out, product_version)


def _write_jsonl(events: Iterable[dict[str, Any]], out: TextIO, product_version: str) -> int:
    count = 0
    for event in events:
        line = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
        out.write(_JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", line) + "\n")
        count += 1
    return count


def _write_csv(events: Iterable[dict[str, Any]], out: TextIO, product_version: str, *, keep: str) -> int:
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    count = 0
    for event in events:
        writer.writerow([_cell(value, keep=keep) for value in _row(event)])
        count += 1
    return count


def _write_cef(events: Iterable[dict[str, Any]], out: TextIO, product_version: str) -> int:
    count = 0
    for event in events:
        out.write(format_cef(event, product_version=product_version) + "\n")
        count += 1
    return count


def _row(event: dict[str, Any]) -> list[str | None]:
    """The event's values in ``CSV_COLUMNS`` order."""
    process = process_facts(event.get("process")) or {}
    enforcement = enforcement_facts(event) or {}
    destination = destination_facts(event) or {}
    repository = repository_facts(event) or {}
    derived = {
        "destination_host": destination.get("host"),
        "destination_url": destination.get("url"),
        "destination_tool": destination.get("tool"),
        "repository_path": repository.get("path"),
        "repository_protected": repository.get("protected"),
        "refs": ";".join(refs_list(event)),
        "egress_allowed": (egress_verdict(event) or {}).get("allowed"),
        "process_exe": process.get("exe"),
        "process_pid": process.get("pid"),
        "process_cmdline": process.get("cmdline"),
        "process_user": process.get("user"),
        "enforcement_action": enforcement.get("action"),
        "enforcement_outcome": enforcement.get("outcome"),
        "rules": ";".join(rule_names(event)),
        "rule_kinds": ";".join(rule_kinds(event)),
        "fingerprint_sources": ";".join(fingerprint_sources(event)),
        "device": device_label(event),
        "triage_status": triage_status(event),
    }
    return [derived[column] if column in derived else text(event.get(column)) for column in CSV_COLUMNS]


def _cell(value: str | None, *, keep: str) -> str:
    """A cell no spreadsheet evaluates or shows reordered, and no terminal obeys.

    Hidden characters other than ``keep`` become ``<U+XXXX>`` marks (NUL and lone
    surrogates too, which CSV readers and UTF-8 cannot take); then a leading ``'``
    makes a would-be formula plain text.
    """
    cell = visible(value or "", keep=keep)
    return "'" + cell if _FORMULA.match(cell) else cell
