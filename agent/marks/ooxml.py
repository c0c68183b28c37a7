"""Marks in Word, Excel and PowerPoint files (OOXML), and reading them back (ODF too).

A marked copy carries the payload two independent ways:

- ``property``: a custom document property ``DLPMark`` (docProps/custom.xml) holding the DLPM1
  token. Survives saving in Office and LibreOffice (which keeps custom properties, also when
  converting to ODF); lost to metadata stripping and to copying the text.
- ``homoglyph`` / ``zero_width``: the visible text runs (``w:t``, ``a:t``, shared strings holding
  prose) marked by ``text.mark_within`` over the part's whole character data, the text ``read``
  sees, so a frame may span runs and skip field codes or labels it must not touch. Survives
  metadata stripping, copying the text into a new document and (homoglyphs) PDF conversion.

Runs are found with regular expressions, like agent/scanning/doctext.py does: no XML parser, so no
entity expansion and no surprise on odd but valid markup; only the text between a run's tags and
the run's properties change. Runs that received homoglyphs get ``<w:noProof/>`` (``noProof="1"``
in PowerPoint) so spell-checkers do not underline the swapped words. Every other member is copied
unchanged (same bytes once decompressed, same order, same zip metadata).
"""

from __future__ import annotations

import bisect
import html
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO

from agent.marks import homoglyph, zerowidth
from agent.marks import text as textmarks
from agent.marks.bounds import MAX_MARK_TEXT, MAX_MARK_UNZIPPED, WATERMARK_CARRIERS, AlreadyMarked, BoundedZip, CorruptDocument, Encrypted, TooLarge, check_time, expired
from agent.marks.payload import PROPERTY, TOKEN, Found, as_property, token
from agent.marks.printed import add_footer, add_tail_run
from agent.scanning.doctext import xml_to_text

PROPERTY_NAME = "DLPMark"
CUSTOM_PART = "docProps/custom.xml"
CUSTOM_TYPE = "application/vnd.openxmlformats-officedocument.custom-properties+xml"
CUSTOM_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/custom-properties"
_VT_NS = "http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes"
_FMTID = "{D5CDD505-2E9C-101B-9397-08002B2CF9AE}"
PROPERTY_PARTS = ("docProps/custom.xml", "docProps/core.xml", "docProps/app.xml", "meta.xml")
"""Where a document's properties live (OOXML, and ODF's meta.xml after LibreOffice converts)."""

_CYRILLIC = re.compile("[\u0400-\u04ff]")
_NODES = re.compile(rb"<[^>]*>|[^<]+")
_INSERTED_CHARS = zerowidth.CHARS
_INSERTED = re.compile(f"[{zerowidth.CHARS}]+")
_CYRILLIC_BACK = homoglyph.CYRILLIC_TO_LATIN


@dataclass(frozen=True)
class _Flavour:
    """How one OOXML application writes its text runs."""

    text: re.Pattern[bytes]
    """The start tag of a text element whose content may be marked."""
    breaks: re.Pattern[bytes]
    """Tags that end a line (paragraph or cell ends, breaks, tabs)."""
    proofing: Callable[[bytes, int], tuple[int, int, bytes] | None] | None
    """The edit that turns proofing off for the run holding the text element at an offset."""
    prose_only: bool = False


_DOCX_RPR_AFTER = re.compile(
    rb"<w:(?:snapToGrid|vanish|webHidden|color|spacing|w|kern|position|sz|szCs|highlight|u|effect|bdr|shd"
    rb"|fitText|vertAlign|rtl|cs|em|lang|eastAsianLayout|specVanish|oMath|rPrChange)\b"
)
"""rPr children that come after noProof in the schema's sequence (Word refuses other orders)."""


def _docx_proofing(xml: bytes, at: int) -> tuple[int, int, bytes] | None:
    start = max(xml.rfind(b"<w:r>", 0, at), xml.rfind(b"<w:r ", 0, at))
    if start < 0:
        return None
    tag_end = xml.find(b">", start) + 1
    if xml.startswith(b"<w:rPr/>", tag_end):
        return tag_end, tag_end + 8, b"<w:rPr><w:noProof/></w:rPr>"
    if not (xml.startswith(b"<w:rPr>", tag_end) or xml.startswith(b"<w:rPr ", tag_end)):
        return tag_end, tag_end, b"<w:rPr><w:noProof/></w:rPr>"
    inner = xml.find(b">", tag_end) + 1
    end = xml.find(b"</w:rPr>", inner)
    if end < 0 or end > at:
        return None
    later = _DOCX_RPR_AFTER.search(xml, inner, end)
    where = later.start() if later else end
    if b"<w:noProof" in xml[inner:where]:
        return None
    return where, where, b"<w:noProof/>"


def _pptx_proofing(xml: bytes, at: int) -> tuple[int, int, bytes] | None:
    start = max(xml.rfind(b"<a:r>", 0, at), xml.rfind(b"<a:r ", 0, at), xml.rfind(b"<a:fld ", 0, at))
    if start < 0:
        return None
    tag_end = xml.find(b">", start) + 1
    if not xml.startswith(b"<a:rPr", tag_end):
        return tag_end, tag_end, b'<a:rPr noProof="1"/>'
    rpr_end = xml.find(b">", tag_end)
    if b"noProof=" in xml[tag_end:rpr_end]:
        return None
    return tag_end + 6, tag_end + 6, b' noProof="1"'


_FLAVOURS = {
    "docx": _Flavour(
        re.compile(rb"<w:t(?:\s[^>]*[^/])?>"),
        re.compile(rb"</w:p>|<w:(?:br|cr|tab)\b"),
        _docx_proofing,
    ),
    "pptx": _Flavour(
        re.compile(rb"<a:t(?:\s[^>]*[^/])?>"),
        re.compile(rb"</a:p>|<a:br\b"),
        _pptx_proofing,
    ),
    "xlsx": _Flavour(
        re.compile(rb"<t(?:\s[^>]*[^/])?>"),
        re.compile(rb"</si>"),
        None,
        prose_only=True,
    ),
}

_PROSE = re.compile(r"[^\W\d_]{2,}(?:\W+[^\W\d_]{2,}){2,}")
"""A spreadsheet string worth marking: three words or more (labels and codes stay exact)."""


def kind(names: set[str]) -> str | None:
    """``docx``, ``xlsx`` or ``pptx`` for an OOXML package's member names; None otherwise."""
    if "[Content_Types].xml" not in names:
        return None
    for main, found in (("word/document.xml", "docx"), ("xl/workbook.xml", "xlsx"), ("ppt/presentation.xml", "pptx")):
        if main in names:
            return found
    return None


def text_parts(flavour: str, names: set[str]) -> list[str]:
    """The parts whose runs are marked, in the order their text is marked and read."""
    if flavour == "docx":
        return ["word/document.xml"]
    if flavour == "xlsx":
        # Shared strings, then the sheets (cells written with their text inline, as openpyxl does).
        sheets = [name for name in names if re.fullmatch(r"xl/worksheets/sheet\d+\.xml", name)]
        shared = ["xl/sharedStrings.xml"] if "xl/sharedStrings.xml" in names else []
        return shared + sorted(sheets, key=lambda name: int(re.sub(r"\D", "", name)))
    slides = [name for name in names if re.fullmatch(r"ppt/slides/slide\d+\.xml", name)]
    return sorted(slides, key=lambda name: int(re.sub(r"\D", "", name)))


def mark(data: bytes, payload: bytes) -> tuple[bytes, str, tuple[str, ...]]:
    """A marked copy of an OOXML package: its bytes, its kind and the carriers that hold a frame."""
    package = BoundedZip(data, limit=MAX_MARK_UNZIPPED)
    flavour = kind(package.names)
    if flavour is None:
        raise ValueError("not an OOXML package")
    if package.encrypted():
        raise Encrypted("the package has encrypted members")
    parts = text_parts(flavour, package.names)
    bodies = {info.filename: package.read(info) for info in package.infos}
    if _PROPERTY_ELEMENT.search(bodies.get(CUSTOM_PART, b"")):
        raise AlreadyMarked(f"the document already has a {PROPERTY_NAME} property: trace it, or mark the original")
    written = _mark_runs(_FLAVOURS[flavour], bodies, parts, payload)
    _set_property(bodies, token(payload))
    if flavour == "docx":
        tailed = add_tail_run(bodies["word/document.xml"], token(payload))
        if tailed is not None:
            bodies["word/document.xml"] = tailed
            written.append(TOKEN)
    if flavour == "xlsx":
        hidden = _set_defined_name(bodies, token(payload))
        printed = [sheet for sheet in parts if sheet.startswith("xl/worksheets/") and _footed(bodies, sheet, token(payload))]
        if hidden or printed:
            written.append(TOKEN)
    out = BytesIO()
    with zipfile.ZipFile(out, "w") as writer:
        for info in package.infos:
            writer.writestr(_copy_info(info), bodies.pop(info.filename))
        for name, body in bodies.items():
            writer.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), body, zipfile.ZIP_DEFLATED)
    return out.getvalue(), flavour, (PROPERTY, *sorted(written))


def _copy_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    copy = zipfile.ZipInfo(info.filename, date_time=info.date_time)
    copy.compress_type = info.compress_type
    copy.external_attr = info.external_attr
    copy.create_system = info.create_system
    copy.comment = info.comment
    copy.extra = info.extra
    return copy


def _mark_runs(flavour: _Flavour, bodies: dict[str, bytes], parts: list[str], payload: bytes) -> list[str]:
    """Mark the text runs of ``parts`` in place in ``bodies``; returns the carriers written.

    The text handed to text.mark_within is all character data of the parts, as ``read`` sees it
    (field codes, deleted text, short spreadsheet labels included), and only the runs' text is
    open to marking: writer and reader then count the same homoglyph slots.
    """
    pieces: list[str] = []
    runs: list[tuple[str, int, int, int, int]] = []  # part, xml start, xml end, text start, text end
    at = 0
    for part in parts:
        xml = bodies[part]
        opened = False
        if pieces:
            pieces.append("\n")
            at += 1
        for count, node in enumerate(_NODES.finditer(xml)):
            if count & 0xFFFF == 0:
                check_time("marking the document's text")
                if at > MAX_MARK_TEXT:
                    raise TooLarge(f"the document's text is longer than {MAX_MARK_TEXT} characters")
            raw = node.group(0)
            if raw.startswith(b"<"):
                opened = flavour.text.fullmatch(raw) is not None
                if flavour.breaks.match(raw):
                    pieces.append("\n")
                    at += 1
                continue
            value = html.unescape(raw.decode("utf-8", errors="replace"))
            pieces.append(value)
            if opened and (not flavour.prose_only or _PROSE.search(value)):
                runs.append((part, node.start(), node.end(), at, at + len(value)))
            at += len(value)
    if at > MAX_MARK_TEXT:
        raise TooLarge(f"the document's text is longer than {MAX_MARK_TEXT} characters")
    if not runs:
        return []
    full = "".join(pieces)
    if textmarks.might_carry(full.encode("utf-8")) and any(item.carrier in WATERMARK_CARRIERS for item in textmarks.read_text(full)):
        raise AlreadyMarked("the document's text already carries a mark: trace it, or mark the original")
    marked, carriers = textmarks.mark_within(full, [(start, end) for _, _, _, start, end in runs], payload)
    starts = _insertion_starts(full, marked)
    edits: dict[str, list[tuple[int, int, bytes]]] = {part: [] for part in parts}
    proofed: set[tuple[str, int]] = set()
    for part, xml_start, xml_end, start, end in runs:
        before, after = full[start:end], marked[starts(start) : starts(end)]
        if before == after:
            continue
        escaped = after.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        edits[part].append((xml_start, xml_end, escaped.encode("utf-8")))
        if flavour.proofing and len(_CYRILLIC.findall(after)) > len(_CYRILLIC.findall(before)):
            edit = flavour.proofing(bodies[part], xml_start)
            if edit and (part, edit[0]) not in proofed:
                proofed.add((part, edit[0]))
                edits[part].append(edit)
    for part, changes in edits.items():
        bodies[part] = _apply(bodies[part], changes)
    return carriers


def _insertion_starts(original: str, marked: str) -> Callable[[int], int]:
    """Where in ``marked`` the text before ``original[k]`` ends (zero-width clusters inserted before a
    character belong to it); marked differs from original by those insertions and 1:1 swaps only."""
    inserted = [(match.start(), len(match.group(0))) for match in _INSERTED.finditer(marked)]
    if _INSERTED.search(original) is None:
        at_original: list[int] = []  # original index each cluster stands before
        total = 0
        for where, length in inserted:
            at_original.append(where - total)
            total += length
        cumulative = [0]
        for _, length in inserted:
            cumulative.append(cumulative[-1] + length)

        def fast(k: int) -> int:
            return k + cumulative[bisect.bisect_left(at_original, k)]

        return fast
    positions: list[int] = []  # slow path: the original already holds zero-width characters
    j = 0
    for char in original:
        positions.append(j)
        while j < len(marked) and marked[j] != char and marked[j] in _INSERTED_CHARS and _CYRILLIC_BACK.get(marked[j]) != char:
            j += 1
        j += 1
    positions.append(len(marked))

    def slow(k: int) -> int:
        return positions[k]

    return slow


def _apply(xml: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    pieces: list[bytes] = []
    at = 0
    for start, end, new in sorted(edits, key=lambda edit: (edit[0], edit[1])):
        pieces += [xml[at:start], new]
        at = end
    pieces.append(xml[at:])
    return b"".join(pieces)


_PROPERTY_ELEMENT = re.compile(rb'<property\b[^>]*\bname="' + PROPERTY_NAME.encode() + rb'"[^>]*>.*?</property>', re.S)


def _set_property(bodies: dict[str, bytes], value: str) -> None:
    """Write the DLPMark custom property, creating custom.xml and its type and relationship if needed."""
    custom = bodies.get(CUSTOM_PART)
    if custom is None:
        custom = (
            b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            b'<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/custom-properties" '
            b'xmlns:vt="' + _VT_NS.encode() + b'"></Properties>'
        )
        _add_type_and_relationship(bodies)
    custom = _PROPERTY_ELEMENT.sub(b"", custom)
    pids = [int(pid) for pid in re.findall(rb'\bpid="(\d+)"', custom)]
    declared = f'xmlns:vt="{_VT_NS}"'.encode() in custom
    vt = "<vt:lpwstr>" if declared else f'<vt:lpwstr xmlns:vt="{_VT_NS}">'
    number = max([1, *pids]) + 1
    element = f'<property fmtid="{_FMTID}" pid="{number}" name="{PROPERTY_NAME}">{vt}{value}</vt:lpwstr></property>'.encode()
    closing = re.search(rb"</(?:\w+:)?Properties>", custom)
    if closing:
        custom = custom[: closing.start()] + element + custom[closing.start() :]
    else:
        custom = re.sub(rb"<((?:\w+:)?Properties\b[^>]*?)\s*/>", lambda m: m.group(1) + b">" + element + b"</Properties>", custom)
    bodies[CUSTOM_PART] = custom


def _footed(bodies: dict[str, bytes], sheet: str, value: str) -> bool:
    footed = add_footer(bodies[sheet], value)
    if footed is None:
        return False
    bodies[sheet] = footed
    return True


DEFINED_NAME = "DLPMarkRef"
_AFTER_DEFINED_NAMES = re.compile(
    rb"<(?:\w+:)?(?:calcPr|oleSize|customWorkbookViews|pivotCaches|smartTagPr|smartTagTypes|webPublishing|fileRecoveryPr|webPublishObjects|extLst)\b|</(?:\w+:)?workbook>"
)


def _set_defined_name(bodies: dict[str, bytes], value: str) -> bool:
    """A hidden workbook name holding the token: not metadata, so stripping the document's
    properties leaves it, and a spreadsheet of numbers and short labels (no prose cell to carry
    a frame) keeps one carrier. Written where the schema puts definedNames; False if it cannot be."""
    workbook = bodies.get("xl/workbook.xml")
    if workbook is None or re.search(rb"<(?:\w+:)?workbook\b[^>]*\bxmlns:\w+=\"http://schemas\.openxmlformats\.org/spreadsheetml", workbook):
        return False  # a prefixed SpreadsheetML namespace: leave the part as it is
    element = f'<definedName name="{DEFINED_NAME}" hidden="1">&quot;{value}&quot;</definedName>'.encode()
    existing = re.search(rb"</definedNames>", workbook)
    if existing:
        bodies["xl/workbook.xml"] = workbook[: existing.start()] + element + workbook[existing.start() :]
        return True
    place = _AFTER_DEFINED_NAMES.search(workbook)
    if place is None:
        return False
    bodies["xl/workbook.xml"] = workbook[: place.start()] + b"<definedNames>" + element + b"</definedNames>" + workbook[place.start() :]
    return True


def _add_type_and_relationship(bodies: dict[str, bytes]) -> None:
    types = bodies["[Content_Types].xml"]
    if b'PartName="/docProps/custom.xml"' not in types:
        override = f'<Override PartName="/{CUSTOM_PART}" ContentType="{CUSTOM_TYPE}"/>'.encode()
        bodies["[Content_Types].xml"] = types.replace(b"</Types>", override + b"</Types>", 1)
    rels = bodies.get("_rels/.rels")
    relationship = f'<Relationship Id="rIdDLPMark" Type="{CUSTOM_REL}" Target="{CUSTOM_PART}"/>'.encode()
    if rels is None:
        bodies["_rels/.rels"] = (
            b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">' + relationship + b"</Relationships>"
        )
    elif CUSTOM_REL.encode() not in rels:
        bodies["_rels/.rels"] = rels.replace(b"</Relationships>", relationship + b"</Relationships>", 1)


def read(data: bytes) -> list[Found]:
    """Every carrier in an OOXML or ODF package (unmerged); nothing for other zips or encrypted ones.

    Raises:
        CorruptDocument, TooLarge: the zip cannot be read within the bounds.
    """
    package = BoundedZip(data)
    flavour = kind(package.names)
    odf = "content.xml" in package.names and "mimetype" in package.names
    if flavour is None and not odf:
        return []
    found: list[Found] = []
    ordered = text_parts(flavour, package.names) if flavour else []
    first = set(ordered)
    ordered += [info.filename for info in package.infos if info.filename not in first]
    texts: list[bytes] = []
    for name in ordered:
        if expired():
            break  # past the read deadline (bounds.deadline): what was read so far
        if not name.endswith(".xml"):
            continue
        info = package.zip.getinfo(name)
        if info.flag_bits & 0x1:
            continue
        try:
            body = xml_to_text(package.read(info))
        except CorruptDocument:
            continue  # a damaged part hides only its own text
        if name in PROPERTY_PARTS:
            found += as_property(_read(body))
        else:
            texts.append(body)
    return found + _read(b"\n".join(texts))


def _read(body: bytes) -> list[Found]:
    if not textmarks.might_carry(body):
        return []
    return textmarks.read_text(body.decode("utf-8", errors="replace"))

