"""ArcSight CEF:0 lines for events, unambiguous whatever bytes an agent put in its fields.

Every value is cleaned (control characters and lone surrogates removed; LF and CR
kept in the extension as the ``\\n`` and ``\\r`` escapes, turned into spaces in the
header; bidi controls shown as ``<U+202E>``), cut to the length the CEF
specification allows for its key, escaped, and finally the longest values are
shortened until the whole line fits ``max_bytes`` of UTF-8. Cuts fall between
characters, never inside an escape sequence or a mark.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from typing import Any

from agent.display import BIDI_CONTROLS, unicode_mark
from agent.events import SEVERITIES
from server.siem.fields import (
    destination_facts,
    device_label,
    egress_verdict,
    enforcement_facts,
    fingerprint_sources,
    process_facts,
    rule_kinds,
    rule_names,
    text,
)

VENDOR = "DLP Endpoint"
PRODUCT = "dlp-endpoint"
MAX_LINE_BYTES = 8192

_SEVERITY: dict[str, int] = dict(zip(SEVERITIES, (3, 5, 8, 10)))
# No severity, or one outside our scale (agents are untrusted), is the lowest we use.
_DEFAULT_SEVERITY = 1

# Lone surrogates are legal in JSON text but cannot be encoded as UTF-8, so they go too.
_UNPRINTABLE = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# Bidi controls would reorder what a SIEM console shows (``invoice\u202egpj.exe`` as ``invoiceexe.jpg``):
# they become visible marks, one token each so a cut never splits one.
_BIDI_MARKS = {char: unicode_mark(char) for char in BIDI_CONTROLS}
_HEADER_ESCAPES = {"\\": "\\\\", "|": "\\|", "\n": " ", "\r": " ", **_BIDI_MARKS}
_EXTENSION_ESCAPES = {"\\": "\\\\", "=": "\\=", "\n": "\\n", "\r": "\\r", **_BIDI_MARKS}

# Maximum lengths (characters) the CEF specification gives for the fields we fill from event text.
_VERSION_CHARS = 31
_SIGNATURE_CHARS = 1023
_NAME_CHARS = 512
_STRING_CHARS = 1023
_HASH_CHARS = 255
_EXTERNAL_ID_CHARS = 40
_CUSTOM_STRING_CHARS = 4000
_FLEX_STRING_CHARS = 1023

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# A piece of the line: fixed text we wrote (never cut) followed by escaped tokens of a value (cut as needed).
_Piece = tuple[str, list[str]]


def format_cef(event: dict[str, Any], *, product_version: str, max_bytes: int = MAX_LINE_BYTES) -> str:
    """One CEF:0 line (no line terminator) describing ``event``, at most ``max_bytes`` of UTF-8.

    Extension keys whose value is missing or empty are left out.

    Raises:
        ValueError: ``max_bytes`` cannot even hold the keys and separators.
    """
    pieces: list[_Piece] = [
        (f"CEF:0|{VENDOR}|{PRODUCT}|", _header_tokens(product_version, _VERSION_CHARS)),
        ("|", _header_tokens(text(event.get("type")) or "", _SIGNATURE_CHARS)),
        ("|", _header_tokens(_name(event), _NAME_CHARS)),
        (f"|{_cef_severity(event.get('severity'))}|", []),
    ]
    for index, (key, tokens) in enumerate(_extension(event)):
        pieces.append((f"{' ' if index else ''}{key}", tokens))
    return _fit(pieces, max_bytes)


def _cef_severity(severity: Any) -> int:
    """CEF's 0-10 severity for one of ours (None or one of SEVERITIES)."""
    return _SEVERITY.get(severity, _DEFAULT_SEVERITY) if isinstance(severity, str) else _DEFAULT_SEVERITY


def _name(event: dict[str, Any]) -> str:
    """A short human summary: the event type and the rules that fired."""
    kind = text(event.get("type")) or "event"
    rules = rule_names(event)
    if not rules:
        return kind
    more = f" (+{len(rules) - 1} more)" if len(rules) > 1 else ""
    return f"{kind} matched {rules[0]}{more}"


def _extension(event: dict[str, Any]) -> list[_Piece]:
    """The extension as (``key=`` prefix, value tokens), present values only, in a fixed order."""
    process = process_facts(event.get("process")) or {}
    enforcement = enforcement_facts(event) or {}
    destination = destination_facts(event) or {}
    # An egress event's destination is CEF's destination host; the endpoint it left is then the source host.
    endpoint = "shost=" if destination.get("host") else "dhost="
    strings: list[tuple[str, str | None, int]] = [
        ("rt=", _epoch_ms(event.get("received_at")), _STRING_CHARS),
        ("start=", _epoch_ms(event.get("occurred_at")), _STRING_CHARS),
        ("externalId=", text(event.get("id")), _EXTERNAL_ID_CHARS),
        ("cat=", text(event.get("channel")), _STRING_CHARS),
        (endpoint, text(event.get("host")), _STRING_CHARS),
        ("duser=", text(event.get("user")), _STRING_CHARS),
        *_address(event.get("source_ip")),
        ("filePath=", text(event.get("path")), _STRING_CHARS),
        ("fileHash=", text(event.get("sha256")), _HASH_CHARS),
        ("fsize=", _size(event.get("size")), _STRING_CHARS),
        ("cs1Label=rules cs1=", ",".join(rule_names(event)), _CUSTOM_STRING_CHARS),
        ("cs2Label=vendor cs2=", text(event.get("vendor")), _CUSTOM_STRING_CHARS),
        ("cs3Label=agent cs3=", text(event.get("agent_id")), _CUSTOM_STRING_CHARS),
        ("cs4Label=device cs4=", device_label(event), _CUSTOM_STRING_CHARS),
        ("cs5Label=status cs5=", text(event.get("status")), _CUSTOM_STRING_CHARS),
        ("cs6Label=ruleKinds cs6=", ",".join(rule_kinds(event)), _CUSTOM_STRING_CHARS),
        ("flexString1Label=fingerprintSources flexString1=", ",".join(fingerprint_sources(event)), _FLEX_STRING_CHARS),
        # The writer or clipboard owner: CEF's source process and the user it ran as.
        ("sproc=", process.get("exe"), _STRING_CHARS),
        ("spid=", process.get("pid"), _STRING_CHARS),
        ("suser=", process.get("user"), _STRING_CHARS),
        ("suid=", process.get("uid"), _STRING_CHARS),
        ("flexString2Label=processCommandLine flexString2=", process.get("cmdline"), _FLEX_STRING_CHARS),
        ("act=", enforcement.get("action"), _STRING_CHARS),
        ("outcome=", enforcement.get("outcome"), _STRING_CHARS),
        ("dhost=", destination.get("host"), _STRING_CHARS),
        ("dpt=", destination.get("port"), _STRING_CHARS),
        ("app=", destination.get("tool"), _STRING_CHARS),
        ("request=", destination.get("url"), _STRING_CHARS),
        ("reason=", (egress_verdict(event) or {}).get("summary"), _STRING_CHARS),
    ]
    pieces = []
    for key, value, limit in strings:
        tokens = _extension_tokens(value or "", limit)
        if tokens:
            pieces.append((key, tokens))
    return pieces


def _address(value: Any) -> list[tuple[str, str | None, int]]:
    """The source address under the key for its family.

    CEF's ``src`` is typed IPv4; an IPv6 address there would be rejected by strict
    parsers, so it goes in the custom IPv6 field instead. Anything that is not an
    address is left out rather than passed on into a typed field.
    """
    if not isinstance(value, str):
        return []
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return []
    key = "src=" if address.version == 4 else "c6a2Label=Source IPv6 Address c6a2="
    return [(key, str(address), _STRING_CHARS)]


def _epoch_ms(value: Any) -> str | None:
    """An ISO 8601 timestamp as milliseconds since the epoch; naive times are taken as UTC."""
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return str((moment - _EPOCH) // dt.timedelta(milliseconds=1))


def _size(value: Any) -> str | None:
    """The file size, only when it is an integer: ``fsize`` is a typed field."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _header_tokens(value: str, limit: int) -> list[str]:
    return [_HEADER_ESCAPES.get(ch, ch) for ch in _UNPRINTABLE.sub("", value)[:limit]]


def _extension_tokens(value: str, limit: int) -> list[str]:
    return [_EXTENSION_ESCAPES.get(ch, ch) for ch in _UNPRINTABLE.sub("", value)[:limit]]


def _fit(pieces: list[_Piece], max_bytes: int) -> str:
    """Join the pieces, cutting the longest values first so the line fits ``max_bytes``.

    One cap applies to every value: values under it are kept whole, longer ones are
    cut to it, so one huge path cannot push the host or the rules out of the line.
    """
    fixed = sum(len(prefix.encode()) for prefix, _ in pieces)
    if fixed > max_bytes:
        raise ValueError(f"max_bytes={max_bytes} cannot hold a CEF line of {fixed} bytes of keys")
    values = ["".join(tokens) for _, tokens in pieces]
    sizes = [len(value.encode()) for value in values]
    cap = _water_level(sizes, max_bytes - fixed)
    line = []
    for (prefix, tokens), value, size in zip(pieces, values, sizes):
        line.append(prefix)
        line.append(value if size <= cap else _cut(tokens, cap))
    return "".join(line)


def _water_level(sizes: list[int], budget: int) -> int:
    """The largest cap such that ``sum(min(size, cap))`` stays within ``budget``."""
    remaining = budget
    ordered = sorted(sizes)
    for index, size in enumerate(ordered):
        share = remaining // (len(ordered) - index)
        if size > share:
            return share
        remaining -= size
    return max(sizes, default=0)


def _cut(tokens: list[str], cap: int) -> str:
    """The longest run of whole tokens from the start that fits ``cap`` bytes."""
    used = 0
    for count, token in enumerate(tokens):
        used += len(token.encode())
        if used > cap:
            return "".join(tokens[:count])
    return "".join(tokens)
