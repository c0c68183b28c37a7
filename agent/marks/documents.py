"""Marked copies of documents and code, and every mark a file carries, whatever its format.

``mark_file`` picks the format from the content (a zip with [Content_Types].xml is OOXML, ``%PDF-``
is a PDF) and then the name (Markdown, a code language); what is left is plain text when it
decodes as UTF-8. Carriers per format (see ooxml.py, pdfmark.py, text.py and code.py for what
survives what):

========  ==============================================================
docx      property, homoglyph, zero_width (text runs)
xlsx      property, homoglyph, zero_width (shared strings holding prose)
pptx      property, homoglyph, zero_width (slide text)
pdf       property (Info, XMP), token (invisible text line on each page)
text      homoglyph, zero_width
markdown  homoglyph, zero_width in body text (not code, URLs, HTML)
code      token (canary comment line), homoglyph, zero_width in comments
========  ==============================================================

``read_file`` reads any file, also ones no mark was written into by us (a PDF printed from a marked
document, text pasted into an ODF document), and never raises on a corrupt one: it reports what it
could read. Both refuse files past the bounds in bounds.py.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from agent.marks import ooxml, pdfmark
from agent.marks import text as textmarks
from agent.marks.bounds import MARK_SECONDS, MAX_MARK_TEXT, READ_SECONDS, WATERMARK_CARRIERS, AlreadyMarked, CorruptDocument, Encrypted, TimeLimit, TooLarge, check_size, deadline
from agent.marks.payload import Found, Unmarkable, merge

FORMATS = ("docx", "xlsx", "pptx", "pdf", "text", "markdown", "code")

_ZIP = (b"PK\x03\x04", b"PK\x05\x06")
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTED_OLE = "EncryptionInfo".encode("utf-16-le")
_MARKDOWN = (".md", ".markdown", ".mdown", ".mkd")
_DATA = (".json", ".xml", ".svg", ".csv", ".tsv", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".env", ".html", ".htm")
"""Text formats whose letters are data: a swapped letter would change a key or a value."""

__all__ = ["FORMATS", "AlreadyMarked", "CorruptDocument", "Encrypted", "Marked", "TimeLimit", "TooLarge", "mark_file", "read_file"]


@dataclass(frozen=True)
class Marked:
    """A marked copy: its bytes, the format it was marked as and the carriers holding a whole frame."""

    data: bytes
    format: str
    carriers: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}: one of {FORMATS}")


def mark_file(data: bytes, name: str, payload: bytes) -> Marked:
    """A copy of ``data`` (called ``name``) carrying ``payload``.

    Raises:
        Unmarkable: a format the marker does not write, an encrypted document (Encrypted), a
            text too short for any carrier, or a file that already carries a watermark
            (AlreadyMarked: a second mark would make its trace name two seats).
        CorruptDocument: the content claims a format (zip, PDF) but cannot be read as one.
        TooLarge: past the bounds in bounds.py (also a text of more than MAX_MARK_TEXT characters).
        TimeLimit: marking took longer than MARK_SECONDS.
    """
    check_size(data)
    with deadline(MARK_SECONDS):
        return _mark_file(data, name, payload)


def _mark_file(data: bytes, name: str, payload: bytes) -> Marked:
    if data.startswith(b"%PDF-"):
        return Marked(pdfmark.mark(data, payload), "pdf", ("property", "token"))
    if data.startswith(_ZIP):
        return Marked(*_mark_zip(data, payload))
    if data.startswith(_OLE):
        if _ENCRYPTED_OLE in data:
            raise Encrypted("the Office document is encrypted")
        raise Unmarkable("legacy binary Office format: save it as docx, xlsx or pptx first")
    lower = name.lower()
    decoded = _decode_for_marking(data)
    if decoded is None:
        raise Unmarkable("not a document, code or UTF-8 text")
    text, codec, bom = decoded
    if len(text) > MAX_MARK_TEXT:
        raise TooLarge(f"text of {len(text)} characters is longer than {MAX_MARK_TEXT} characters")
    if textmarks.might_carry(text.encode("utf-8", errors="replace")):
        if any(item.carrier in WATERMARK_CARRIERS for item in textmarks.read_text(text)):
            raise AlreadyMarked("the text already carries a mark: trace it, or mark the original")
    from agent.marks import code  # lazily: code.py depends on text.py like this module

    if lower.endswith(_MARKDOWN):
        kind, (marked, written) = "markdown", _mark_markdown(text, payload)
    elif code.language(name) is not None:
        kind, marked = "code", code.mark_code(text, payload, name=name)
        written = [item.carrier for item in textmarks.read_text(marked) if item.payload == payload]
    elif lower.endswith(_DATA):
        raise Unmarkable(f"{name}: a data format whose letters are values")
    else:
        kind, (marked, written) = "text", textmarks.mark_within(text, [(0, len(text))], payload)
    if not written:
        raise Unmarkable("the text is too short for a mark")
    return Marked(bom + marked.encode(codec), kind, tuple(sorted(written)))


def _mark_zip(data: bytes, payload: bytes) -> tuple[bytes, str, tuple[str, ...]]:
    try:
        return ooxml.mark(data, payload)
    except (Unmarkable, CorruptDocument, TooLarge, TimeLimit):
        raise
    except ValueError as exc:
        raise Unmarkable(f"a zip that is not a Word, Excel or PowerPoint file ({exc})") from exc


def _decode_for_marking(data: bytes) -> tuple[str, str, bytes] | None:
    """The text, the codec to write it back with and its byte order mark; None for binary data."""
    for bom, codec in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(codec), codec, bom
            except UnicodeDecodeError:
                return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8"), "utf-8", b""
    except UnicodeDecodeError:
        return None


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n.*?^(?:---|\.\.\.)[ \t]*$\r?\n?", re.S | re.M)
_INLINE = re.compile(
    r"(`+).*?\1"  # inline code
    r"|\]\([^)\s]*(?:\s+\"[^\"]*\")?\)"  # a link's or image's target
    r"|^ {0,3}\[[^\]]+\]:.*$"  # a reference definition
    r"|<[^>\n]*>"  # autolinks and HTML tags
    r"|https?://\S+|www\.\S+"  # bare URLs
    r"|&#?\w+;",  # entities
    re.M,
)


def _mark_markdown(text: str, payload: bytes) -> tuple[str, list[str]]:
    """Body text marked; code (fenced, indented, inline), URLs, HTML and front matter left byte for byte.

    text.mark_within counts homoglyph slots over the whole file, as a reader does, so a frame may
    run past a code span as long as none of its swaps falls inside one.
    """
    prose: list[tuple[int, int]] = []
    front = _FRONT_MATTER.match(text)
    at = front.end() if front else 0
    fence: str | None = None
    previous_blank = True
    for line in text[at:].splitlines(keepends=True):
        start, at = at, at + len(line)
        opening = _FENCE.match(line)
        if fence is not None:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence) and not line.strip(" `~\r\n"):
                fence = None
        elif opening:
            fence = opening.group(1)
        elif (line.startswith("    ") or line.startswith("\t")) and previous_blank and line.strip():
            continue  # an indented code block goes on while its lines stay indented
        else:
            cursor = start
            for match in _INLINE.finditer(line):
                prose.append((cursor, start + match.start()))
                cursor = start + match.end()
            prose.append((cursor, at))
        previous_blank = not line.strip()
    ranges: list[tuple[int, int]] = []
    for begin, end in prose:
        if begin >= end:
            continue
        if ranges and ranges[-1][1] == begin:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((begin, end))
    return textmarks.mark_within(text, ranges, payload)


def read_file(data: bytes, name: str = "") -> list[Found]:
    """Every mark ``data`` carries (merged), by every carrier; nothing when it holds none.

    Office (OOXML and ODF) packages and PDFs are read as such; anything else as text (UTF-8,
    UTF-16, else Latin-1, which still shows tokens and canary secrets). A corrupt file yields what
    could be read; an encrypted one nothing. Past READ_SECONDS, what was found so far.

    Raises:
        TooLarge: the file, or a zip's decompressed members, past the bounds in bounds.py.
    """
    check_size(data)
    with deadline(READ_SECONDS):
        return _read_file(data)


def _read_file(data: bytes) -> list[Found]:
    if _starts_as_pdf(data):
        return merge(pdfmark.read(data))
    if b"%PDF-" in data[:1024]:
        # Readers accept a PDF after some junk; a text that mentions "%PDF-" is read as text when
        # no PDF can be read from it.
        found = pdfmark.read(data)
        if found:
            return merge(found)
    if data.startswith(_ZIP):
        try:
            return merge(ooxml.read(data))
        except (CorruptDocument, Encrypted):
            return []
    text = _utf16(data)
    if text is not None:
        return textmarks.read_text(text) if textmarks.might_carry(text.encode("utf-8", errors="replace")) else []
    if not textmarks.might_carry(data):
        return []
    try:
        return textmarks.read_text(data.removeprefix(codecs.BOM_UTF8).decode("utf-8"))
    except UnicodeDecodeError:
        return textmarks.read_text(data.decode("latin-1"))


def _starts_as_pdf(data: bytes) -> bool:
    """Whether ``data`` opens with ``%PDF-``, after at most a byte order mark and a few blanks."""
    head = data[:16].removeprefix(codecs.BOM_UTF8).lstrip(b" \t\r\n\f\0")
    return head.startswith(b"%PDF-")


def _utf16(data: bytes) -> str | None:
    """The text of UTF-16 data (by its byte order mark, or NULs in every other byte); None otherwise."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    head = data[:4096]
    if len(head) < 4:
        return None
    if head[1::2].count(0) > len(head) // 4:
        return data.decode("utf-16-le", errors="replace")
    if head[0::2].count(0) > len(head) // 4:
        return data.decode("utf-16-be", errors="replace")
    return None
