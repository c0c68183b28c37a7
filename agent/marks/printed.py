"""Printed carriers: the token as text in white, one point high, where printing keeps it.

Properties and hidden names do not print, and the homoglyph frames need a whole run of prose that a
spreadsheet's cells (printed column by column, cut at the page edge) or a text in another script
(Russian has no Latin letters to swap) may not have. A token printed in white at one point shows
neither on screen nor on paper, yet ``pdftotext`` and a select-all copy read it back.

- spreadsheets: in each sheet's page footer (every printed page); an existing footer keeps its text;
- Word documents: one run at the end of the body, which a copy of the whole text also takes along.
"""

from __future__ import annotations

import re

_CODES = "&amp;1&amp;KFFFFFF "
"""Footer codes (escaped for XML): font size 1, colour white, then the token."""
_AFTER_HEADER_FOOTER = re.compile(
    rb"<(?:rowBreaks|colBreaks|customProperties|cellWatches|ignoredErrors|smartTags|drawing|legacyDrawing|legacyDrawingHF"
    rb"|picture|oleObjects|controls|webPublishItems|tableParts|extLst)\b|</worksheet>"
)
_ODD_FOOTER = re.compile(rb"<oddFooter>(.*?)</oddFooter>|<oddFooter\s*/>", re.S)
_HEADER_FOOTER = re.compile(rb"<headerFooter\b[^>]*?(/?)>")


def add_footer(sheet: bytes, token: str) -> bytes | None:
    """``sheet`` (a worksheet part in the default SpreadsheetML namespace) with the token in its
    odd-page footer; None when the part is not one this can edit safely (prefixed elements)."""
    if b"<x:worksheet" in sheet or not sheet.rstrip().endswith(b"</worksheet>"):
        return None
    text = (_CODES + token).encode()
    footer = _ODD_FOOTER.search(sheet)
    if footer is not None:
        body = footer.group(1) or b""
        if len(body) + len(text) > 2000:
            return None  # Excel limits a footer to 255 characters of text; leave a long one alone
        # In a section of its own where the footer has no right-hand one; else after a space, so a
        # code at the end of the footer (``&P``, the page number) is not read together with ours.
        joint = b" " if b"&amp;R" in body else b"&amp;R"
        return sheet[: footer.start()] + b"<oddFooter>" + body + joint + text + b"</oddFooter>" + sheet[footer.end() :]
    element = b"<oddFooter>&amp;R" + text + b"</oddFooter>"
    existing = _HEADER_FOOTER.search(sheet)
    if existing is not None:
        if existing.group(1):  # <headerFooter/>
            return sheet[: existing.start()] + existing.group(0)[:-2].rstrip() + b">" + element + b"</headerFooter>" + sheet[existing.end() :]
        # oddFooter follows oddHeader when there is one
        header_end = sheet.find(b"</oddHeader>", existing.end())
        close = sheet.find(b"</headerFooter>", existing.end())
        at = header_end + len(b"</oddHeader>") if 0 <= header_end < close else existing.end()
        return sheet[:at] + element + sheet[at:]
    place = _AFTER_HEADER_FOOTER.search(sheet)
    if place is None:
        return None
    return sheet[: place.start()] + b"<headerFooter>" + element + b"</headerFooter>" + sheet[place.start() :]


_BODY_END = re.compile(rb"(<w:sectPr\b(?:(?!<w:p[ >]).)*)?</w:body>", re.S)


def add_tail_run(document: bytes, token: str) -> bytes | None:
    """``word/document.xml`` with a white one-point run holding the token at the end of its last
    paragraph; None when the body has no paragraph to end (then nothing is written)."""
    end = _BODY_END.search(document)
    if end is None:
        return None
    last = document.rfind(b"</w:p>", 0, end.start())
    if last < 0 or b"<w:" not in document[:last]:
        return None
    run = f'<w:r><w:rPr><w:noProof/><w:color w:val="FFFFFF"/><w:sz w:val="2"/><w:szCs w:val="2"/></w:rPr><w:t xml:space="preserve"> {token}</w:t></w:r>'
    return document[:last] + run.encode() + document[last:]
