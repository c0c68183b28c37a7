"""Bulk export of events for a SIEM or a spreadsheet: JSON lines, CSV or CEF."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal, TextIO

from server.siem.cef import format_cef
from server.siem.fields import device_label, rule_names, text, triage_status

Format = Literal["jsonl", "csv", "cef"]

CSV_COLUMNS = (
    "id", "seq", "received_at", "occurred_at", "vendor", "agent_id", "host", "user", "channel", "type",
    "severity", "status", "path", "sha256", "size", "rules", "device", "source_ip", "source_country",
    "triage_status",
)  # fmt: skip

# Characters that make a spreadsheet read a cell as a formula (OWASP's CSV injection list).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# NUL breaks some CSV readers; lone surrogates cannot be written as UTF-8.
_CSV_UNWRITABLE = re.compile(r"[\x00\ud800-\udfff]")
# Left raw by json.dumps(ensure_ascii=False), yet line breaks to str.splitlines() (U+0085, U+2028,
# U+2029) or unwritable as UTF-8 (lone surrogates); as \u escapes they are still the same JSON.
_JSON_UNSAFE = re.compile(r"[\x85\u2028\u2029\ud800-\udfff]")


def write_events(events: Iterable[dict[str, Any]], out: TextIO, *, fmt: Format, product_version: str) -> int:
    """Write ``events`` to ``out`` one at a time and return how many were written.

    jsonl: one compact JSON object per line. csv: a header row, then the columns in
    ``CSV_COLUMNS`` (open ``out`` with ``newline=""``, as the csv module asks). cef:
    one CEF line per event. ``product_version`` goes into CEF lines only.

    Raises:
        ValueError: an unknown format (before anything is written).
    """
    writers: dict[str, Callable[[Iterable[dict[str, Any]], TextIO, str], int]] = {
        "jsonl": _write_jsonl,
        "csv": _write_csv,
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


def _write_csv(events: Iterable[dict[str, Any]], out: TextIO, product_version: str) -> int:
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    count = 0
    for event in events:
        writer.writerow([_cell(value) for value in _row(event)])
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
    derived = {
        "rules": ";".join(rule_names(event)),
        "device": device_label(event),
        "triage_status": triage_status(event),
    }
    return [derived[column] if column in derived else text(event.get(column)) for column in CSV_COLUMNS]


def _cell(value: str | None) -> str:
    """A cell no spreadsheet will evaluate: a leading ``'`` makes a would-be formula plain text."""
    cell = _CSV_UNWRITABLE.sub("", value or "")
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell
